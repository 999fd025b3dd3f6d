"""The cluster's processes: each started in a session of its own and recorded in a PID file (with
its start time, so a reused PID is not mistaken for it), stopped with all its descendants."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import psutil

from devtools.cluster.settings import ClusterError, ClusterSettings

log = logging.getLogger(__name__)


def pid_file(settings: ClusterSettings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def recorded_process(settings: ClusterSettings, name: str) -> psutil.Process | None:
    """The running process recorded under `name`, or None (also when the PID was reused)."""
    path = pid_file(settings, name)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    try:
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - record["created"]) > 0.01 or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.NoSuchProcess:
        return None


def spawn(settings: ClusterSettings, name: str, cmd: list[str], env: Mapping[str, str]) -> psutil.Process:
    """Start `cmd` in a session of its own (so `down` can stop its whole group) and record it."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_dir / f"{name}.log"
    with log_path.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        out.flush()
        offset = out.tell()  # where this start's output begins
        popen = subprocess.Popen(
            cmd,
            env=dict(env),
            cwd=settings.project,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = psutil.Process(popen.pid)
    record = {"pid": popen.pid, "created": process.create_time(), "cmd": cmd, "log_offset": offset}
    pid_file(settings, name).write_text(json.dumps(record))
    log.info("started %s (pid %d), log %s", name, popen.pid, log_path)
    return process


def process_tree(process: psutil.Process) -> list[psutil.Process]:
    """The process, everything in its process group, and all its descendants (a task's DVC run
    and stage command included, even if one of them started a session of its own)."""
    found = {process.pid: process}
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in process.children(recursive=True):
            found[child.pid] = child
    for other in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if os.getpgid(other.pid) == process.pid:
                found[other.pid] = other
    return list(found.values())


def signal_tree(processes: Iterable[psutil.Process], sig: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)


def stop(settings: ClusterSettings, names: list[str], grace_s: float = 30.0) -> list[str]:
    """SIGTERM to the whole tree of each named process at once, SIGKILL to what is left after
    `grace_s`. Returns the names that were running."""
    trees: dict[str, list[psutil.Process]] = {}
    for name in names:
        process = recorded_process(settings, name)
        pid_file(settings, name).unlink(missing_ok=True)
        if process is not None:
            trees[name] = process_tree(process)
    everything = [p for tree in trees.values() for p in tree]
    signal_tree(everything, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(everything, timeout=grace_s)
    if alive:
        log.warning("%d processes ignored SIGTERM for %.0fs; killing them", len(alive), grace_s)
        signal_tree(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=10)
    for name, tree in trees.items():
        log.info("stopped %s (pid %d, %d processes)", name, tree[0].pid, len(tree))
    return list(trees)


def log_tail(settings: ClusterSettings, name: str, chars: int = 3000) -> str:
    path = settings.log_dir / f"{name}.log"
    return path.read_text(errors="replace")[-chars:] if path.is_file() else "(no log)"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def require_free(port: int, what: str) -> None:
    if port_open(port):
        raise ClusterError(
            f"port {port} for {what} is taken by another program; stop it or pick another port "
            f"(`python -m devtools cluster up --help`)"
        )


def run_tool(cmd: list[str], what: str, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(env or os.environ))
    if result.returncode:
        raise ClusterError(
            f"{what} failed (exit {result.returncode}): {(result.stdout + result.stderr).strip()[-2000:]}"
        )
    return result.stdout

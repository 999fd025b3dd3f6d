"""Start and stop a real local Triton Inference Server, without Docker.

The nvidia-pytriton wheel bundles a `tritonserver` binary with Triton's Python backend. We launch
that binary directly (PyTriton's own wrapper guards the repository API with a token that plain
tritonclient does not send), in explicit model-control mode, bound to 127.0.0.1, on the live model
repository. The server's PID file, identity, model-control key and log live in an ignored state
folder (`.triton/` by default).

Two guards keep a command from talking to the wrong server:
- identity: each start gives the server a fresh id (Triton's `--id`, kept in `tritonserver.id`);
  it is ready only when its own process is alive and `/v2` on its port answers with that id. A
  port already held by another process (another checkout's server) fails the start, naming it.
- restricted model control: loading, unloading and the repository index need the key header of
  serving.control, so another local process can still run inference but not swap the model.

Start it through serving/startup.py (the one way every command and test starts it): after the
process, it loads every model's pinned version, so a restarted server comes back serving what it
served before: the repository is the record of what serves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.atomic import write_text
from serving import control
from serving.live.sample import with_sample
from serving.overrides import Overrides
from serving.params import SampleParams, ServingParams
from serving.process import ServerError, prepare_backends, server_environment, wheel_dir
from serving.repository import open_store

log = logging.getLogger(__name__)

PID_FILE = "tritonserver.pid"
LOG_FILE = "tritonserver.log"
ID_FILE = "tritonserver.id"
ID_PREFIX = "triton-retrain-"


@dataclass(frozen=True)
class ServerSettings:
    """Where the local server keeps its state and which 127.0.0.1 ports it binds."""

    repository: Path | str  # the live model repository: a local folder, or an s3:// URL (passed through)
    state_dir: Path  # PID file, log, writable backend copy
    http_port: int
    grpc_port: int
    metrics_port: int
    start_timeout_s: float = 30.0
    stop_timeout_s: float = 15.0
    # The model-control key to start with; None = a fresh one per start (serving.control).
    control_key: str | None = field(default=None, repr=False)
    sample: SampleParams = SampleParams()  # live requests its model entries keep (rate 0: none)

    @classmethod
    def resolve(cls, params: ServingParams, overrides: Overrides) -> ServerSettings:
        """Params `serving:` with `overrides` (serving/overrides.py) of the repository, state
        folder, ports and start timeout, checked like params; and the model-control key."""
        params = overrides.apply(params)
        return cls(
            repository=_repository(params.repository),
            state_dir=Path(params.state_dir),
            http_port=params.http_port,
            grpc_port=params.grpc_port,
            metrics_port=params.metrics_port,
            start_timeout_s=params.start_timeout_s,
            control_key=overrides.control_key,
            sample=params.sample,
        )

    @classmethod
    def from_params(cls, params: ServingParams, env: Mapping[str, str] | None = None) -> ServerSettings:
        """Params with the `TRITON_*` variables of `env` (default: this process's environment):
        TRITON_MODEL_REPOSITORY, TRITON_STATE_DIR, TRITON_*_PORT, TRITON_START_TIMEOUT_S, TRITON_CONTROL_KEY."""
        return cls.resolve(params, Overrides.from_env(os.environ if env is None else env))

    @property
    def pid_file(self) -> Path:
        return self.state_dir / PID_FILE

    @property
    def id_file(self) -> Path:
        return self.state_dir / ID_FILE

    @property
    def server_id(self) -> str | None:
        """The id the running server was started with (None before the first start)."""
        try:
            return self.id_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    @property
    def log_file(self) -> Path:
        return self.state_dir / LOG_FILE

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v2/health/ready"

    @property
    def metadata_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v2"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def ports(self) -> dict[str, int]:
        return {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}

    def read_control_key(self) -> str | None:
        """The model-control key of the running server (its 0600 key file), if any."""
        return control.read_key(self.state_dir)

    def with_ports(self, http: int, grpc: int, metrics: int) -> ServerSettings:
        return replace(self, http_port=http, grpc_port=grpc, metrics_port=metrics)


@dataclass(frozen=True)
class ServerState:
    pid: int | None  # from the PID file, if its process is alive and is our tritonserver
    ready: bool  # our server (its id in /v2) answered /v2/health/ready with 200
    settings: ServerSettings
    conflict: str | None = None  # another server answers on our port: who

    def describe(self) -> str:
        where = f"http://127.0.0.1:{self.settings.http_port} (grpc {self.settings.grpc_port})"
        if self.pid is None:
            text = f"not running (no live PID in {self.settings.pid_file})"
            return text + (f"; {self.conflict}" if self.conflict else "")
        if self.conflict:
            return f"pid {self.pid} is alive, but {self.conflict}; log {self.settings.log_file}"
        return f"pid {self.pid}, {'ready' if self.ready else 'NOT ready'} at {where}, log {self.settings.log_file}"


def _repository(location: str) -> Path | str:
    """A URL stays a string: Path() would turn s3://b/p into the local folder s3:/b/p."""
    return location if "://" in location else Path(location)


def server_command(
    settings: ServerSettings, backends: Path, server_id: str | None = None, control_key: str | None = None
) -> list[str]:
    """The tritonserver command line; with an id and a model-control key when given."""
    command = [
        str(wheel_dir() / "bin" / "tritonserver"),
        f"--model-repository={_repository_arg(settings.repository)}",
        f"--backend-directory={backends.resolve()}",
        "--model-control-mode=explicit",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--http-port={settings.http_port}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-port={settings.metrics_port}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--exit-timeout-secs=5",
    ]
    if server_id:
        command.append(f"--id={server_id}")
    if control_key:
        command += control.server_flags(control_key)
    return command


def _repository_arg(repository: Path | str) -> str:
    return repository if isinstance(repository, str) else str(repository.resolve())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not yet reaped) still answers kill(0).
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False
    return True


def _is_our_tritonserver(pid: int, server_id: str | None) -> bool:
    """Guard against a stale PID file whose number now belongs to another process (or to another
    tritonserver): the command line must be tritonserver's, with our id when we know it."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc (not Linux): trust the PID file
    if not args or not args[0].endswith(b"tritonserver"):
        return False
    return server_id is None or f"--id={server_id}".encode() in args


def read_pid(settings: ServerSettings) -> int | None:
    """The PID from the PID file if that process is our live tritonserver, else None."""
    try:
        pid = int(settings.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) and _is_our_tritonserver(pid, settings.server_id) else None


def is_ready(settings: ServerSettings, timeout_s: float = 1.0) -> bool:
    """Something on our HTTP port answers /v2/health/ready with 200 (not necessarily ours)."""
    try:
        with urllib.request.urlopen(settings.ready_url, timeout=timeout_s) as response:  # noqa: S310 - 127.0.0.1
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def answering_id(settings: ServerSettings, timeout_s: float = 1.0) -> str | None:
    """The id (`name` in the /v2 server metadata) of the server answering on our HTTP port."""
    try:
        with urllib.request.urlopen(settings.metadata_url, timeout=timeout_s) as response:  # noqa: S310 - 127.0.0.1
            return str(json.loads(response.read()).get("name")) if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _busy_ports(settings: ServerSettings) -> dict[str, int]:
    """Our ports that some process listens on now. SO_REUSEADDR, as servers bind, so that the
    TIME_WAIT connections a stopped server leaves behind do not count as busy."""
    busy = {}
    for what, port in settings.ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy[what] = port
    return busy


def _holder(settings: ServerSettings) -> str:
    other = answering_id(settings)
    if other is None:
        return "another process"
    return f"another Triton server with id {other!r}" + (
        " (another checkout's `python -m serving start`?)" if other.startswith(ID_PREFIX) else ""
    )


def _ports_text(settings: ServerSettings) -> str:
    return (
        f"Stop that server, or give this one free ports with TRITON_HTTP_PORT / TRITON_GRPC_PORT / "
        f"TRITON_METRICS_PORT or serving.http_port / grpc_port / metrics_port in params.yaml "
        f"(now {settings.http_port}/{settings.grpc_port}/{settings.metrics_port})"
    )


def log_tail(settings: ServerSettings, lines: int = 20) -> str:
    try:
        return "\n".join(settings.log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _wait_ready(settings: ServerSettings, process: subprocess.Popen, server_id: str) -> None:
    """Until our own process is alive and answers with our id: a ready answer from another server
    that holds the port is not ours."""
    deadline = time.monotonic() + settings.start_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            other = answering_id(settings)
            why = (
                f"port {settings.http_port} is held by {_holder(settings)}. " if other not in (None, server_id) else ""
            )
            raise ServerError(
                f"tritonserver exited with code {process.returncode} while starting. {why}"
                f"Log {settings.log_file}:\n{log_tail(settings)}"
            )
        if answering_id(settings) == server_id and is_ready(settings) and process.poll() is None:
            return
        time.sleep(0.2)
    raise ServerError(
        f"tritonserver was not ready within {settings.start_timeout_s:.0f}s at {settings.ready_url}; "
        f"it was stopped. Log {settings.log_file}:\n{log_tail(settings)}"
    )


def start_server(settings: ServerSettings) -> ServerState:
    """Start the server (no-op if the PID file names our live one) and wait until it is ready.

    Fails without starting anything when another process holds one of the ports."""
    pid = read_pid(settings)
    if pid is not None:
        state = server_state(settings)
        if state.conflict:
            raise ServerError(f"tritonserver (pid {pid}) runs, but {state.conflict}. {_ports_text(settings)}.")
        log.info("tritonserver already running (pid %d)", pid)
        return state
    busy = _busy_ports(settings)
    if busy:
        listed = ", ".join(f"{port} ({what})" for what, port in busy.items())
        raise ServerError(
            f"cannot start tritonserver: 127.0.0.1 port {listed} is held by {_holder(settings)}. "
            f"{_ports_text(settings)}."
        )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    open_store(settings.repository).make_root()  # a local folder, or an S3 prefix
    backends = prepare_backends(settings.state_dir)
    server_id = ID_PREFIX + secrets.token_hex(6)
    key = settings.control_key or control.new_key()
    control.write_key(settings.state_dir, key)
    write_text(settings.id_file, server_id + "\n")
    process = None
    try:
        with settings.log_file.open("ab") as log_stream:
            process = subprocess.Popen(
                server_command(settings, backends, server_id, key),
                stdout=log_stream,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=with_sample(server_environment(), settings.sample),
                start_new_session=True,  # a Ctrl-C in the caller's terminal does not reach the server
            )
        write_text(settings.pid_file, f"{process.pid}\n")
        _wait_ready(settings, process, server_id)
    except BaseException:
        if process is not None:
            _end(process, settings.stop_timeout_s)
        _forget(settings)
        raise
    log.info("tritonserver ready (pid %d, id %s) at %s", process.pid, server_id, settings.ready_url)
    return ServerState(pid=process.pid, ready=True, settings=settings)


def _end(process: subprocess.Popen, timeout_s: float) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _forget(settings: ServerSettings) -> None:
    """Remove what a running server leaves in its state folder (PID, id, key)."""
    settings.pid_file.unlink(missing_ok=True)
    settings.id_file.unlink(missing_ok=True)
    control.remove_key(settings.state_dir)


def _kill_group(pid: int) -> None:
    """SIGKILL the server and, when it leads its own process group (as `start_server` starts it),
    the Python backend's stub processes with it: a SIGKILL does not reach a process's children."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def stop_server(settings: ServerSettings) -> int | None:
    """SIGTERM the PID from the PID file, wait for it to exit, remove the file. Returns the PID."""
    pid = read_pid(settings)
    if pid is None:
        _forget(settings)
        log.info("no tritonserver running for %s", settings.pid_file)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + settings.stop_timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        time.sleep(0.1)
    if _alive(pid):
        log.warning("tritonserver (pid %d) ignored SIGTERM for %.0fs; sending SIGKILL", pid, settings.stop_timeout_s)
        _kill_group(pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    _forget(settings)
    log.info("tritonserver stopped (pid %d)", pid)
    return pid


def server_state(settings: ServerSettings) -> ServerState:
    """Our process (PID file + id), and whether the server on our port is ours and ready."""
    pid = read_pid(settings)
    answering = answering_id(settings)
    ours = pid is not None and answering == settings.server_id
    conflict = None
    if answering is not None and not ours:
        conflict = f"port {settings.http_port} answers as {_holder(settings)}, not as this server"
    return ServerState(pid=pid, ready=ours and is_ready(settings), settings=settings, conflict=conflict)

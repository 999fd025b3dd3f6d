"""The local cluster's bookkeeping without its servers: settings, the environment every process
shares, the hostname each worker records, and stopping or killing whole process trees (with real
processes: a child that ignores SIGTERM, a grandchild in a session of its own)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from devtools.cluster import commands, processes, services
from devtools.cluster.settings import DEFAULT_QUEUE, WORKER_ROOT_ENV, ClusterError, ClusterSettings
from orchestration.hostname import WORKER_NAME_ENV, worker_hostname

ROOT = Path(__file__).resolve().parents[2]

# A process tree like a Celery worker running a task: the worker (the recorded process), a child
# that ignores SIGTERM (a stubborn task), and a grandchild that left the process group (a command
# that called setsid). It writes the PIDs of all three, then sleeps.
TREE = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", '''
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    print(grandchild.pid, flush=True)
    time.sleep(600)
    '''], stdout=subprocess.PIPE, text=True)
    grandchild = int(child.stdout.readline())
    with open(sys.argv[1] + ".tmp", "w") as out:
        json.dump([os.getpid(), child.pid, grandchild], out)
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)
    """
)


@pytest.fixture
def settings(tmp_path: Path) -> ClusterSettings:
    return ClusterSettings.default(ROOT, tmp_path / "state")


def spawn_tree(settings: ClusterSettings, name: str, tmp_path: Path) -> list[int]:
    pids_file = tmp_path / f"{name}.json"
    processes.spawn(settings, name, [sys.executable, "-c", TREE, str(pids_file)], os.environ)
    deadline = time.monotonic() + 60
    while not pids_file.is_file():
        assert time.monotonic() < deadline, processes.log_tail(settings, name)
        time.sleep(0.1)
    pids = json.loads(pids_file.read_text())
    assert all(psutil.pid_exists(pid) for pid in pids)
    return pids


def gone(pids: list[int]) -> bool:
    def dead(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return all(dead(pid) for pid in pids)


def test_down_stops_the_whole_tree_even_a_child_that_ignores_sigterm(settings: ClusterSettings, tmp_path: Path) -> None:
    worker = spawn_tree(settings, "worker-cpu-1", tmp_path)
    service = spawn_tree(settings, "scheduler", tmp_path)
    assert processes.recorded_process(settings, "scheduler") is not None

    stopped = processes.stop(settings, ["worker-cpu-1", "scheduler"], grace_s=2)

    assert sorted(stopped) == ["scheduler", "worker-cpu-1"]
    assert gone(worker) and gone(service)
    assert not list(settings.run_dir.glob("*.pid"))
    assert commands.down(settings) == []  # nothing left to stop, and no Postgres was ever started


def test_kill_worker_sigkills_the_worker_and_everything_it_started(settings: ClusterSettings, tmp_path: Path) -> None:
    pids = spawn_tree(settings, "worker-gpu-1", tmp_path)
    other = spawn_tree(settings, "worker-cpu-1", tmp_path)

    assert services.kill_worker(settings, "gpu-1") == 3

    assert gone(pids)
    assert not gone(other), "only the named worker dies"
    assert processes.recorded_process(settings, "worker-gpu-1") is None
    processes.stop(settings, ["worker-cpu-1"], grace_s=2)
    assert gone(other)


def test_a_reused_pid_is_not_taken_for_the_recorded_process(settings: ClusterSettings) -> None:
    settings.run_dir.mkdir(parents=True)
    record = {"pid": os.getpid(), "created": psutil.Process().create_time() - 100, "cmd": ["redis-server"]}
    processes.pid_file(settings, "redis").write_text(json.dumps(record))
    assert processes.recorded_process(settings, "redis") is None
    assert processes.stop(settings, ["redis"]) == []  # and this test's own process is left alone


def test_every_process_shares_one_configuration_and_each_worker_has_its_own_root(
    settings: ClusterSettings,
) -> None:
    settings.save()
    env = services.airflow_env(settings, {"PATH": "/usr/bin"})
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://127.0.0.1:{settings.api_port}/execution/"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == str(settings.api_port)
    assert f"127.0.0.1:{settings.postgres_port}/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:{settings.redis_port}/0"
    assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "orchestration.hostname.worker_hostname"

    # the generated secrets are kept private and the same on the next call (every process agrees)
    secrets = settings.state / "secrets.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert services.airflow_env(settings, {"PATH": "/usr/bin"}) == env

    cpu, gpu = settings.workers
    assert (cpu.queue, gpu.queue) == (DEFAULT_QUEUE, "gpu")  # params airflow.gpu_queue
    cpu_env, gpu_env = (services.worker_env(settings, w, env) for w in (cpu, gpu))
    assert cpu_env[WORKER_ROOT_ENV] != gpu_env[WORKER_ROOT_ENV]
    assert (cpu_env[WORKER_NAME_ENV], gpu_env[WORKER_NAME_ENV]) == ("cpu-1", "gpu-1")
    assert cpu_env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] != gpu_env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]


def test_settings_survive_between_commands(settings: ClusterSettings) -> None:
    settings.save()
    assert ClusterSettings.load(settings.state) == settings
    with pytest.raises(ClusterError, match="cluster up"):
        ClusterSettings.load(settings.state / "nowhere")


def test_a_worker_records_its_own_name_as_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER_NAME_ENV, "gpu-7")
    assert worker_hostname() == "gpu-7"
    monkeypatch.delenv(WORKER_NAME_ENV)
    assert worker_hostname() == socket.getfqdn()  # a worker on a host of its own: the machine's name


def test_the_cli_says_what_to_do_when_no_cluster_was_started(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools", "cluster", "status", "--state-dir", str(tmp_path / "none")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "cluster status failed: no cluster in" in result.stderr and "cluster up" in result.stderr

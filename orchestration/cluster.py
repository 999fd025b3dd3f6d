"""A local Airflow cluster on the CeleryExecutor: the layout a team runs on separate hosts, on 127.0.0.1.

    python -m orchestration cluster up [--no-triton] [--api-port ...]   # make cluster
    python -m orchestration cluster status
    python -m orchestration cluster down                                # make cluster-down

What runs, each in its own process group (PID files and logs in `.airflow/cluster/`):

- Redis (Debian's `redis-server`), the Celery broker;
- Postgres (Debian's `postgresql`), Airflow's metadata database and Celery's result backend: a
  private data folder on its own port, run as the `postgres` user when we are root (its server
  refuses to run as root), password-protected, listening on 127.0.0.1 only;
- `airflow api-server` (UI and REST API, and the Execution API the workers report to),
  `airflow scheduler`, `airflow dag-processor`, `airflow triggerer`;
- two Celery workers, `cpu-1` on queue `default` and `gpu-1` on the GPU queue
  (`airflow.gpu_queue`), each with its own workspace root (`RETRAIN_WORKER_ROOT`, holding its
  checkouts and DVC cache), its own log-server port, and its name recorded as the hostname of
  the task instances it runs (`orchestration.hostname`).

`up` is idempotent: it starts what is not running and waits until every part answers. `down`
stops every process group (children included) and Postgres; the metadata database, the broker's
settings and the worker roots stay for the next `up`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from orchestration.airflow_api import AirflowApi, AirflowApiError
from orchestration.hostname import WORKER_NAME_ENV
from pipeline.errors import StageError

log = logging.getLogger(__name__)

STATE_DIR = ".airflow/cluster"  # relative to the project; ignored by git
WORKER_ROOT_ENV = "RETRAIN_WORKER_ROOT"  # where a worker keeps its checkouts and DVC cache
DEFAULT_QUEUE = "default"  # Airflow's [operators] default_queue
DATABASE = "airflow"  # Postgres role and database of the metadata
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


class ClusterError(StageError):
    """The cluster cannot start or stop; the message says which part and what to do."""


@dataclass(frozen=True)
class Worker:
    name: str  # the hostname its task instances record; also its folder under workers/
    queue: str
    concurrency: int
    log_port: int  # its log server ([logging] worker_log_server_port)


@dataclass(frozen=True)
class ClusterSettings:
    project: Path
    state: Path  # PID files, logs, Postgres data, Airflow home, worker roots
    api_port: int = 8090  # not 8080, so that `make airflow` and the cluster can both run
    redis_port: int = 16379  # not the packaged servers' 6379 / 5432, which may be running
    postgres_port: int = 15432
    triggerer_log_port: int = 8794
    workers: tuple[Worker, ...] = ()
    heartbeat_timeout_s: int = 300  # a running task silent this long is failed (or retried): its worker died
    ready_timeout_s: float = 180.0  # how long `up` waits for every part to answer

    @classmethod
    def default(cls, project: str | Path, state: str | Path | None = None, **overrides: Any) -> ClusterSettings:
        """One CPU worker on the default queue and one GPU worker on `airflow.gpu_queue`."""
        from pipeline.params import load_params

        project = Path(project).resolve()
        gpu_queue = load_params(project / "params.yaml").airflow.gpu_queue
        workers = (
            Worker("cpu-1", DEFAULT_QUEUE, concurrency=2, log_port=8793),
            Worker("gpu-1", gpu_queue, concurrency=1, log_port=8795),
        )
        overrides.setdefault("workers", workers)
        return cls(project=project, state=Path(state or project / STATE_DIR).resolve(), **overrides)

    # --- where things live ----------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.state / "airflow-home"

    @property
    def run_dir(self) -> Path:
        return self.state / "run"

    @property
    def log_dir(self) -> Path:
        return self.state / "logs"

    @property
    def postgres_dir(self) -> Path:
        return self.state / "postgres"  # owned by the postgres user when we are root

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def worker_root(self, worker: Worker) -> Path:
        return self.state / "workers" / worker.name

    def worker(self, name: str) -> Worker:
        for worker in self.workers:
            if worker.name == name:
                return worker
        raise ClusterError(f"no worker {name!r} in this cluster (workers: {[w.name for w in self.workers]})")

    def with_worker(self, worker: Worker) -> ClusterSettings:
        others = tuple(w for w in self.workers if w.name != worker.name)
        return dataclasses.replace(self, workers=(*others, worker))

    # --- recorded between commands ---------------------------------------------------------------
    def save(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        data = dataclasses.asdict(self)
        data["project"], data["state"] = str(self.project), str(self.state)
        _write_private(self.state / "cluster.json", json.dumps(data, indent=2))

    @classmethod
    def load(cls, state: Path) -> ClusterSettings:
        path = state / "cluster.json"
        if not path.is_file():
            raise ClusterError(f"no cluster in {state}: start one with `python -m orchestration cluster up`")
        data = json.loads(path.read_text())
        data["workers"] = tuple(Worker(**w) for w in data["workers"])
        return cls(**{**data, "project": Path(data["project"]), "state": Path(data["state"])})


# --- processes ------------------------------------------------------------------------------------
def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _pid_file(settings: ClusterSettings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def _process(settings: ClusterSettings, name: str) -> psutil.Process | None:
    """The running process recorded under `name`, or None (also when the PID was reused)."""
    path = _pid_file(settings, name)
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


def _spawn(settings: ClusterSettings, name: str, cmd: list[str], env: Mapping[str, str]) -> psutil.Process:
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
    _pid_file(settings, name).write_text(json.dumps(record))
    log.info("started %s (pid %d), log %s", name, popen.pid, log_path)
    return process


def _tree(process: psutil.Process) -> list[psutil.Process]:
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


def _signal_tree(processes: Iterable[psutil.Process], sig: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)


def _stop(settings: ClusterSettings, names: list[str], grace_s: float = 30.0) -> list[str]:
    """SIGTERM to the whole tree of each named process at once, SIGKILL to what is left after
    `grace_s`. Returns the names that were running."""
    trees: dict[str, list[psutil.Process]] = {}
    for name in names:
        process = _process(settings, name)
        _pid_file(settings, name).unlink(missing_ok=True)
        if process is not None:
            trees[name] = _tree(process)
    everything = [p for tree in trees.values() for p in tree]
    _signal_tree(everything, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(everything, timeout=grace_s)
    if alive:
        log.warning("%d processes ignored SIGTERM for %.0fs; killing them", len(alive), grace_s)
        _signal_tree(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=10)
    for name, tree in trees.items():
        log.info("stopped %s (pid %d, %d processes)", name, tree[0].pid, len(tree))
    return list(trees)


def _log_tail(settings: ClusterSettings, name: str, chars: int = 3000) -> str:
    path = settings.log_dir / f"{name}.log"
    return path.read_text(errors="replace")[-chars:] if path.is_file() else "(no log)"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _require_free(port: int, what: str) -> None:
    if _port_open(port):
        raise ClusterError(
            f"port {port} for {what} is taken by another program; stop it or pick another port "
            f"(`python -m orchestration cluster up --help`)"
        )


# --- Redis ----------------------------------------------------------------------------------------
def _start_redis(settings: ClusterSettings) -> None:
    if _process(settings, "redis"):
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise ClusterError("redis-server not found: install the Debian package (`make cluster-deps`, as root)")
    _require_free(settings.redis_port, "Redis")
    data = settings.state / "redis"
    data.mkdir(parents=True, exist_ok=True)
    # A throwaway broker: no snapshots, bound to 127.0.0.1, in the foreground so that its PID is ours.
    cmd = [binary, "--port", str(settings.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    _spawn(settings, "redis", [*cmd, "--dir", str(data), "--daemonize", "no"], os.environ)


def _redis_ready(settings: ClusterSettings) -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=settings.redis_port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


# --- Postgres -------------------------------------------------------------------------------------
def _pg_bin(tool: str) -> str:
    """A Postgres server tool: on PATH, else from Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which(tool)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise ClusterError(f"Postgres' {tool} not found: install the Debian package `postgresql` (`make cluster-deps`)")
    return str(versions[-1])


def _as_postgres(cmd: list[str]) -> list[str]:
    """Postgres refuses to run as root: as root, run its tools as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(env or os.environ))
    if result.returncode:
        raise ClusterError(
            f"{what} failed (exit {result.returncode}): {(result.stdout + result.stderr).strip()[-2000:]}"
        )
    return result.stdout


def _secrets(settings: ClusterSettings) -> dict[str, str]:
    """Generated once per cluster, kept in a file only its owner reads, never in params or code."""
    path = settings.state / "secrets.json"
    if path.is_file():
        return json.loads(path.read_text())
    values = {
        "postgres_password": secrets.token_urlsafe(24),
        "api_secret_key": secrets.token_urlsafe(32),
        "jwt_secret": secrets.token_urlsafe(32),
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    _write_private(path, json.dumps(values))
    return values


def _init_postgres(settings: ClusterSettings, password: str) -> Path:
    data = settings.postgres_dir / "data"
    if (data / "PG_VERSION").is_file():
        return data
    settings.postgres_dir.mkdir(parents=True, exist_ok=True)
    pwfile = settings.postgres_dir / "initdb.pw"
    _write_private(pwfile, password + "\n")
    if os.geteuid() == 0:
        shutil.chown(settings.postgres_dir, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
        reach = subprocess.run(_as_postgres(["test", "-w", str(settings.postgres_dir)]), capture_output=True)
        if reach.returncode:
            raise ClusterError(
                f"the postgres user cannot write {settings.postgres_dir}: every folder above it must be "
                "searchable by others (chmod o+x), or choose another --state-dir"
            )
    try:
        _run(
            _as_postgres(
                [
                    _pg_bin("initdb"),
                    "--pgdata",
                    str(data),
                    "--username",
                    "postgres",
                    "--pwfile",
                    str(pwfile),
                    "--auth",
                    "scram-sha-256",
                    "--encoding",
                    "UTF8",
                    "--no-instructions",
                ]
            ),
            "initdb",
        )
    finally:
        pwfile.unlink(missing_ok=True)
    return data


def _postgres_running(settings: ClusterSettings) -> bool:
    data = settings.postgres_dir / "data"
    if not (data / "PG_VERSION").is_file():
        return False
    status = subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "status", "-D", str(data)]), capture_output=True)
    return status.returncode == 0


def _start_postgres(settings: ClusterSettings, password: str) -> None:
    data = _init_postgres(settings, password)
    if not _postgres_running(settings):
        _require_free(settings.postgres_port, "Postgres")
        # TCP on 127.0.0.1 only, no Unix socket (nothing to place in a system folder).
        options = f"-c port={settings.postgres_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories="
        log_file = settings.postgres_dir / "postgres.log"
        _run(
            _as_postgres(
                [_pg_bin("pg_ctl"), "start", "-D", str(data), "-l", str(log_file), "-w", "-t", "60", "-o", options]
            ),
            f"starting Postgres (log: {log_file})",
        )
        log.info("started Postgres on 127.0.0.1:%d (data %s)", settings.postgres_port, data)
    _create_database(settings, password)


def _create_database(settings: ClusterSettings, password: str) -> None:
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(
        host="127.0.0.1", port=settings.postgres_port, user="postgres", password=password, dbname="postgres"
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(DATABASE)), (password,)
                )
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), sql.Identifier(DATABASE))
                )
    finally:
        connection.close()


def _stop_postgres(settings: ClusterSettings) -> bool:
    if not _postgres_running(settings):
        return False
    data = settings.postgres_dir / "data"
    _run(
        _as_postgres([_pg_bin("pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60"]), "stopping Postgres"
    )
    log.info("stopped Postgres (data %s)", data)
    return True


# --- Airflow --------------------------------------------------------------------------------------
def airflow_env(settings: ClusterSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The configuration every Airflow process of the cluster shares, as environment variables."""
    keys = _secrets(settings)
    password = keys["postgres_password"]
    database = f"{DATABASE}:{password}@127.0.0.1:{settings.postgres_port}/{DATABASE}"
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "AIRFLOW_HOME": str(settings.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.project / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # A local UI without a login; a shared deployment configures a real auth manager.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "orchestration.hostname.worker_hostname",
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{database}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{settings.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{database}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(settings.api_port),
            "AIRFLOW__API__BASE_URL": settings.api_url,
            # Shared by every component: the api-server checks the tokens the scheduler issues.
            "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__LOGGING__TRIGGERER_LOG_SERVER_PORT": str(settings.triggerer_log_port),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(settings.heartbeat_timeout_s),
            "RETRAIN_PROJECT_DIR": str(settings.project),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def worker_env(settings: ClusterSettings, worker: Worker, env: Mapping[str, str]) -> dict[str, str]:
    return {
        **env,
        WORKER_ROOT_ENV: str(settings.worker_root(worker)),
        WORKER_NAME_ENV: worker.name,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker.log_port),
    }


def _airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def _service_cmd(name: str) -> list[str]:
    return [_airflow_bin(), name]


def _worker_cmd(worker: Worker) -> list[str]:
    return [
        _airflow_bin(),
        "celery",
        "worker",
        "--queues",
        worker.queue,
        "--concurrency",
        str(worker.concurrency),
        "--celery-hostname",
        f"{worker.name}@{socket.gethostname()}",
    ]


def _worker_key(worker: Worker) -> str:
    return f"worker-{worker.name}"


def start_worker(settings: ClusterSettings, worker: Worker, env: Mapping[str, str], fresh: bool = False) -> None:
    """Start one Celery worker (if not running); `fresh` empties its workspace root and cache
    first, as on a new host."""
    if _process(settings, _worker_key(worker)):
        return
    root = settings.worker_root(worker)
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    _require_free(worker.log_port, f"the log server of worker {worker.name}")
    _spawn(settings, _worker_key(worker), _worker_cmd(worker), worker_env(settings, worker, env))


def kill_worker(settings: ClusterSettings, name: str) -> int:
    """SIGKILL a worker and everything it started, at once: what a host that dies looks like to
    the cluster. Returns how many processes were killed."""
    worker = settings.worker(name)
    key = _worker_key(worker)
    process = _process(settings, key)
    _pid_file(settings, key).unlink(missing_ok=True)
    if process is None:
        return 0
    tree = _tree(process)
    _signal_tree(tree, signal.SIGKILL)
    psutil.wait_procs(tree, timeout=10)
    log.info("killed worker %s: %d processes", name, len(tree))
    return len(tree)


def _worker_ready(settings: ClusterSettings, worker: Worker) -> bool:
    """Celery logs `<name>@<host> ready.` once it consumes its queue (looked for in this start's output)."""
    key = _worker_key(worker)
    pid_file = _pid_file(settings, key)
    if not pid_file.is_file():
        return False
    with (settings.log_dir / f"{key}.log").open("rb") as log_file:
        log_file.seek(json.loads(pid_file.read_text()).get("log_offset", 0))
        text = log_file.read().decode(errors="replace")
    return f"{worker.name}@" in text and " ready." in text


def _prepare_airflow(settings: ClusterSettings, env: Mapping[str, str]) -> None:
    from orchestration.local import prepare_airflow
    from pipeline.params import load_params

    settings.home.mkdir(parents=True, exist_ok=True)
    prepare_airflow(dict(env), load_params(settings.project / "params.yaml"))


def _wait_ready(settings: ClusterSettings, names: list[str]) -> dict[str, Any]:
    """Until the API says every service is healthy and every worker consumes its queue."""
    api = AirflowApi(settings.api_url, timeout_s=5)
    deadline = time.monotonic() + settings.ready_timeout_s
    health: dict[str, Any] = {}
    while True:
        for name in names:
            if _process(settings, name) is None:
                raise ClusterError(
                    f"{name} exited while the cluster started; its log ends:\n{_log_tail(settings, name)}"
                )
        with contextlib.suppress(AirflowApiError):
            health = api.health()
        services = {k: (v or {}).get("status") for k, v in health.items()}
        workers = [w for w in settings.workers if _worker_key(w) in names]
        if (
            services
            and all(s == "healthy" for s in services.values())
            and all(_worker_ready(settings, w) for w in workers)
        ):
            return services
        if time.monotonic() > deadline:
            waiting = [w.name for w in workers if not _worker_ready(settings, w)]
            raise ClusterError(
                f"the cluster did not become ready within {settings.ready_timeout_s:.0f}s: services {services or 'no answer'}, "
                f"workers not ready {waiting}; logs in {settings.log_dir}"
            )
        time.sleep(1)


# --- the commands ---------------------------------------------------------------------------------
def up(settings: ClusterSettings, env: Mapping[str, str] | None = None, triton: bool = True) -> dict[str, Any]:
    """Start whatever part of the cluster is not running, and wait until all of it answers."""
    started = time.monotonic()
    settings.save()
    _start_redis(settings)
    keys = _secrets(settings)
    _start_postgres(settings, keys["postgres_password"])
    deadline = time.monotonic() + 30
    while not _redis_ready(settings):
        if _process(settings, "redis") is None or time.monotonic() > deadline:
            raise ClusterError(f"Redis did not start on port {settings.redis_port}:\n{_log_tail(settings, 'redis')}")
        time.sleep(0.2)
    shared = airflow_env(settings, env)
    keys_running = [*SERVICES, *(_worker_key(w) for w in settings.workers)]
    if not all(_process(settings, name) for name in keys_running):
        _prepare_airflow(settings, shared)  # migrate (idempotent, but seconds) only when something starts
    if triton:
        from orchestration.local import ensure_triton
        from pipeline.params import load_params

        ensure_triton(load_params(settings.project / "params.yaml"))
    names = []
    for name in SERVICES:
        names.append(name)
        if not _process(settings, name):
            if name == "api-server":
                _require_free(settings.api_port, "the Airflow api-server")
            _spawn(settings, name, _service_cmd(name), shared)
    for worker in settings.workers:
        names.append(_worker_key(worker))
        start_worker(settings, worker, shared)
    services = _wait_ready(settings, names)
    seconds = round(time.monotonic() - started, 1)
    log.info("cluster up in %.1fs: %s, UI and API on %s", seconds, services, settings.api_url)
    return {"seconds": seconds, "services": services, "api": settings.api_url}


def down(settings: ClusterSettings) -> list[str]:
    """Stop every process the cluster started: Airflow first, then the broker, then the database."""
    recorded = sorted(p.stem for p in settings.run_dir.glob("*.pid")) if settings.run_dir.is_dir() else []
    stopped = _stop(settings, [n for n in recorded if n != "redis"])
    stopped += _stop(settings, ["redis"])
    if _stop_postgres(settings):
        stopped.append("postgres")
    return stopped


def status(settings: ClusterSettings) -> dict[str, Any]:
    processes = {}
    names = ["redis", *SERVICES, *(_worker_key(w) for w in settings.workers)]
    if settings.run_dir.is_dir():  # and any worker started besides the configured ones
        names += sorted(p.stem for p in settings.run_dir.glob("*.pid") if p.stem not in names)
    for name in names:
        process = _process(settings, name)
        processes[name] = f"running (pid {process.pid})" if process else "stopped"
    processes["postgres"] = "running" if _postgres_running(settings) else "stopped"
    try:
        health = {k: (v or {}).get("status") for k, v in AirflowApi(settings.api_url, timeout_s=5).health().items()}
    except AirflowApiError as error:
        health = {"api": str(error)}
    return {"processes": processes, "health": health, "api": settings.api_url, "state": str(settings.state)}


def main(project: Path, argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m orchestration cluster", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--state-dir", help=f"PID files, logs and data (default: {STATE_DIR} in the project)")
    parser.add_argument("--api-port", type=int, help="Airflow UI and API (default 8090)")
    parser.add_argument("--redis-port", type=int, help="the broker (default 16379)")
    parser.add_argument("--postgres-port", type=int, help="the metadata database (default 15432)")
    parser.add_argument("--no-triton", action="store_true", help="do not start the local Triton (params `serving:`)")
    args = parser.parse_args(argv)
    state = Path(args.state_dir).resolve() if args.state_dir else project / STATE_DIR
    try:
        if args.action == "up":
            ports = {
                k: v
                for k, v in {
                    "api_port": args.api_port,
                    "redis_port": args.redis_port,
                    "postgres_port": args.postgres_port,
                }.items()
                if v
            }
            if (state / "cluster.json").is_file() and not ports:
                settings = ClusterSettings.load(state)
            else:
                settings = ClusterSettings.default(project, state, **ports)
            result = up(settings, triton=not args.no_triton)
            print(f"cluster up in {result['seconds']}s; UI and REST API: {result['api']}")
            print(f"logs: {settings.log_dir}; stop it with `make cluster-down`")
        elif args.action == "down":
            settings = ClusterSettings.load(state)
            stopped = down(settings)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        else:
            print(json.dumps(status(ClusterSettings.load(state)), indent=2))
    except ClusterError as error:
        print(f"cluster {args.action} failed: {error}", file=sys.stderr)
        return 1
    return 0

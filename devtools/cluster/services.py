"""The cluster's Airflow: the configuration every process shares, the services and the Celery workers."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import socket
import time
from collections.abc import Mapping
from typing import Any

import psutil

from devtools.airflow_api import AirflowApi, AirflowApiError
from devtools.airflow_home import airflow_bin, prepare_airflow
from devtools.airflow_home import airflow_env as local_airflow_env
from devtools.cluster.processes import (
    log_tail,
    pid_file,
    process_tree,
    recorded_process,
    require_free,
    signal_tree,
    spawn,
)
from devtools.cluster.settings import (
    DATABASE,
    SWEEP_DATABASE,
    WORKER_ROOT_ENV,
    ClusterError,
    ClusterSettings,
    Worker,
    cluster_secrets,
)
from orchestration.hostname import WORKER_NAME_ENV
from orchestration.sweep.study import STORAGE_ENV

log = logging.getLogger(__name__)


def airflow_env(settings: ClusterSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The configuration every Airflow process of the cluster shares, as environment variables:
    the local one (devtools.airflow_home) with the Celery executor, Postgres and Redis on top."""
    keys = cluster_secrets(settings)
    password = keys["postgres_password"]
    server = f"{DATABASE}:{password}@127.0.0.1:{settings.postgres_port}"
    database = f"{server}/{DATABASE}"
    env = local_airflow_env(settings.project, settings.home, settings.api_port, base)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "orchestration.hostname.worker_hostname",
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{database}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{settings.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{database}",
            "AIRFLOW__API__BASE_URL": settings.api_url,
            # Shared by every component: the api-server checks the tokens the scheduler issues.
            "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__LOGGING__TRIGGERER_LOG_SERVER_PORT": str(settings.triggerer_log_port),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(settings.heartbeat_timeout_s),
            "PYTHONUNBUFFERED": "1",
            # Optuna's study storage for the sweeps' trials: every worker reads and writes the same study
            STORAGE_ENV: f"postgresql+psycopg2://{server}/{SWEEP_DATABASE}",
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


def service_cmd(name: str) -> list[str]:
    return [airflow_bin(), name]


def worker_cmd(worker: Worker) -> list[str]:
    return [
        airflow_bin(),
        "celery",
        "worker",
        "--queues",
        worker.queue,
        "--concurrency",
        str(worker.concurrency),
        "--celery-hostname",
        f"{worker.name}@{socket.gethostname()}",
    ]


def worker_key(worker: Worker) -> str:
    return f"worker-{worker.name}"


def start_worker(settings: ClusterSettings, worker: Worker, env: Mapping[str, str], fresh: bool = False) -> None:
    """Start one Celery worker (if not running); `fresh` empties its workspace root and cache
    first, as on a new host."""
    if recorded_process(settings, worker_key(worker)):
        return
    root = settings.worker_root(worker)
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    require_free(worker.log_port, f"the log server of worker {worker.name}")
    spawn(settings, worker_key(worker), worker_cmd(worker), worker_env(settings, worker, env))


def kill_worker(settings: ClusterSettings, name: str) -> int:
    """SIGKILL a worker and everything it started, at once: what a host that dies looks like to
    the cluster. Returns how many processes were killed."""
    worker = settings.worker(name)
    key = worker_key(worker)
    process = recorded_process(settings, key)
    pid_file(settings, key).unlink(missing_ok=True)
    if process is None:
        return 0
    tree = process_tree(process)
    signal_tree(tree, signal.SIGKILL)
    psutil.wait_procs(tree, timeout=10)
    log.info("killed worker %s: %d processes", name, len(tree))
    return len(tree)


def worker_ready(settings: ClusterSettings, worker: Worker) -> bool:
    """Celery logs `<name>@<host> ready.` once it consumes its queue (looked for in this start's output)."""
    key = worker_key(worker)
    recorded = pid_file(settings, key)
    if not recorded.is_file():
        return False
    with (settings.log_dir / f"{key}.log").open("rb") as log_file:
        log_file.seek(json.loads(recorded.read_text()).get("log_offset", 0))
        text = log_file.read().decode(errors="replace")
    return f"{worker.name}@" in text and " ready." in text


def prepare_cluster_airflow(settings: ClusterSettings, env: Mapping[str, str]) -> None:
    from orchestration.params import load_project_params

    settings.home.mkdir(parents=True, exist_ok=True)
    prepare_airflow(env, load_project_params(settings.project / "params.yaml").airflow)


def wait_ready(settings: ClusterSettings, names: list[str]) -> dict[str, Any]:
    """Until the API says every service is healthy and every worker consumes its queue."""
    api = AirflowApi(settings.api_url, timeout_s=5)
    deadline = time.monotonic() + settings.ready_timeout_s
    health: dict[str, Any] = {}
    while True:
        for name in names:
            if recorded_process(settings, name) is None:
                raise ClusterError(
                    f"{name} exited while the cluster started; its log ends:\n{log_tail(settings, name)}"
                )
        with contextlib.suppress(AirflowApiError):
            health = api.health()
        services = {k: (v or {}).get("status") for k, v in health.items()}
        workers = [w for w in settings.workers if worker_key(w) in names]
        if (
            services
            and all(s == "healthy" for s in services.values())
            and all(worker_ready(settings, w) for w in workers)
        ):
            return services
        if time.monotonic() > deadline:
            waiting = [w.name for w in workers if not worker_ready(settings, w)]
            raise ClusterError(
                f"the cluster did not become ready within {settings.ready_timeout_s:.0f}s: services {services or 'no answer'}, "
                f"workers not ready {waiting}; logs in {settings.log_dir}"
            )
        time.sleep(1)

"""What a local cluster is: its ports, workers and folders, recorded between commands
(`cluster.json` in its state folder), and the secrets generated once for it."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration.workspace import WORKER_ROOT_ENV  # noqa: F401 - where a worker keeps its checkouts and DVC cache
from pipeline.errors import StageError

STATE_DIR = ".airflow/cluster"  # relative to the project; ignored by git
DEFAULT_QUEUE = "default"  # Airflow's [operators] default_queue
DATABASE = "airflow"  # Postgres role and database of the metadata
SWEEP_DATABASE = "sweeps"  # the hyper-parameter sweeps' Optuna studies (sweep.storage), owned by the same role
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
        from orchestration.params import load_project_params

        project = Path(project).resolve()
        gpu_queue = load_project_params(project / "params.yaml").airflow.gpu_queue
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
        write_private(self.state / "cluster.json", json.dumps(data, indent=2))

    @classmethod
    def load(cls, state: Path) -> ClusterSettings:
        path = state / "cluster.json"
        if not path.is_file():
            raise ClusterError(f"no cluster in {state}: start one with `python -m devtools cluster up`")
        data = json.loads(path.read_text())
        data["workers"] = tuple(Worker(**w) for w in data["workers"])
        return cls(**{**data, "project": Path(data["project"]), "state": Path(data["state"])})


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def cluster_secrets(settings: ClusterSettings) -> dict[str, str]:
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
    write_private(path, json.dumps(values))
    return values

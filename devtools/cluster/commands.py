"""A local Airflow cluster on the CeleryExecutor: the layout a team runs on separate hosts, on 127.0.0.1.

    python -m devtools cluster up [--no-triton] [--api-port ...]   # make cluster
    python -m devtools cluster status
    python -m devtools cluster down                                # make cluster-down

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

import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devtools.airflow_api import AirflowApi, AirflowApiError
from devtools.cluster.broker import redis_ready, start_redis
from devtools.cluster.database import postgres_running, start_postgres, stop_postgres
from devtools.cluster.processes import log_tail, recorded_process, require_free, spawn, stop
from devtools.cluster.services import (
    airflow_env,
    prepare_cluster_airflow,
    service_cmd,
    start_worker,
    wait_ready,
    worker_key,
)
from devtools.cluster.settings import SERVICES, STATE_DIR, ClusterError, ClusterSettings, cluster_secrets

log = logging.getLogger(__name__)


def up(settings: ClusterSettings, env: Mapping[str, str] | None = None, triton: bool = True) -> dict[str, Any]:
    """Start whatever part of the cluster is not running, and wait until all of it answers."""
    started = time.monotonic()
    settings.save()
    start_redis(settings)
    keys = cluster_secrets(settings)
    start_postgres(settings, keys["postgres_password"])
    deadline = time.monotonic() + 30
    while not redis_ready(settings):
        if recorded_process(settings, "redis") is None or time.monotonic() > deadline:
            raise ClusterError(f"Redis did not start on port {settings.redis_port}:\n{log_tail(settings, 'redis')}")
        time.sleep(0.2)
    shared = airflow_env(settings, env)
    keys_running = [*SERVICES, *(worker_key(w) for w in settings.workers)]
    if not all(recorded_process(settings, name) for name in keys_running):
        prepare_cluster_airflow(settings, shared)  # migrate (idempotent, but seconds) only when something starts
    if triton:
        from devtools.triton import ensure_triton
        from orchestration.params import load_project_params

        ensure_triton(load_project_params(settings.project / "params.yaml"))
    names = []
    for name in SERVICES:
        names.append(name)
        if not recorded_process(settings, name):
            if name == "api-server":
                require_free(settings.api_port, "the Airflow api-server")
            spawn(settings, name, service_cmd(name), shared)
    for worker in settings.workers:
        names.append(worker_key(worker))
        start_worker(settings, worker, shared)
    services = wait_ready(settings, names)
    seconds = round(time.monotonic() - started, 1)
    log.info("cluster up in %.1fs: %s, UI and API on %s", seconds, services, settings.api_url)
    return {"seconds": seconds, "services": services, "api": settings.api_url}


def down(settings: ClusterSettings) -> list[str]:
    """Stop every process the cluster started: Airflow first, then the broker, then the database."""
    recorded = sorted(p.stem for p in settings.run_dir.glob("*.pid")) if settings.run_dir.is_dir() else []
    stopped = stop(settings, [n for n in recorded if n != "redis"])
    stopped += stop(settings, ["redis"])
    if stop_postgres(settings):
        stopped.append("postgres")
    return stopped


def status(settings: ClusterSettings) -> dict[str, Any]:
    processes = {}
    names = ["redis", *SERVICES, *(worker_key(w) for w in settings.workers)]
    if settings.run_dir.is_dir():  # and any worker started besides the configured ones
        names += sorted(p.stem for p in settings.run_dir.glob("*.pid") if p.stem not in names)
    for name in names:
        process = recorded_process(settings, name)
        processes[name] = f"running (pid {process.pid})" if process else "stopped"
    processes["postgres"] = "running" if postgres_running(settings) else "stopped"
    try:
        health = {k: (v or {}).get("status") for k, v in AirflowApi(settings.api_url, timeout_s=5).health().items()}
    except AirflowApiError as error:
        health = {"api": str(error)}
    return {"processes": processes, "health": health, "api": settings.api_url, "state": str(settings.state)}


def main(project: Path, argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m devtools cluster", description=__doc__.splitlines()[0])
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

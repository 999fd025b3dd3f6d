"""One full retrain run: the LocalExecutor (`airflow dags test`) vs the local Celery cluster.

    python bench/cluster_run.py [--epochs 6] [--folds 2]

Two fresh copies of the project (same params: few epochs, `--folds` folds, no schedule) each do
one first run from nothing against a Triton of their own on free ports:
1. baseline: `airflow dags test retrain <date>` on a migrated SQLite home (what `make run` does);
2. the cluster (`devtools.cluster` on free ports, a fresh state folder): the time `up` takes
   from nothing (initdb, migrate, every process answering), then the same run triggered through
   the REST API and polled until it ends, then `down` and a second `up` with the data kept.
Prints the wall times and the cluster/baseline ratio. Timings on a shared machine are noisy: run
it more than once and compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support import copy_project, edit_params, free_ports, local_triton  # noqa: E402

from devtools.airflow_api import AirflowApi, AirflowApiError  # noqa: E402
from devtools.cluster import commands  # noqa: E402
from devtools.cluster.settings import ClusterSettings  # noqa: E402

DAG_ID = "retrain"
DATE = "2026-01-26"
BIN = Path(sys.executable).parent


def project_copy(target: Path, epochs: int, folds: int) -> Path:
    target.mkdir(parents=True)
    copy_project(target)
    edit_params(
        target,
        split__folds=list(range(folds)),
        train__epochs=epochs,
        gate__floors={"accuracy": 0.85, "f1_macro": 0.85},
        airflow__schedule=None,
        airflow__data_asset=None,
    )
    return target


def triton_connection(triton) -> str:
    return json.dumps(
        {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": triton.http_port,
            # the local server restricts model control to its key: the workers get it as a real
            # deployment's would, through the Connection
            "extra": {"model_repository": str(triton.repository), "control_key": triton.read_control_key()},
        }
    )


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "TRITON_", "RETRAIN_"))}


def local_run(work: Path, epochs: int, folds: int) -> float:
    project = project_copy(work / "local-project", epochs, folds)
    home = work / "local-home"
    env = {
        **clean_env(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
    }
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([str(BIN / "airflow"), "pools", "set", "gpu", "1", "gpu"], env=env, check=True, capture_output=True)
    with local_triton(work / "local-triton") as triton:
        env["AIRFLOW_CONN_TRITON_DEFAULT"] = triton_connection(triton)
        started = time.perf_counter()
        result = subprocess.run(
            [str(BIN / "airflow"), "dags", "test", DAG_ID, DATE], env=env, cwd=project, capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
    if "state=success" not in result.stdout + result.stderr:
        raise SystemExit(f"the LocalExecutor run failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return seconds


def cluster_run(work: Path, epochs: int, folds: int) -> dict[str, float]:
    project = project_copy(work / "cluster-project", epochs, folds)
    state = Path(tempfile.mkdtemp(prefix="retrain-cluster-bench-"))
    state.chmod(0o755)  # Postgres runs as its own user and must reach its data folder
    api_port, redis_port, postgres_port, triggerer_port, *log_ports = free_ports(6)
    base = ClusterSettings.default(project, state)
    settings = dataclasses.replace(
        base,
        api_port=api_port,
        redis_port=redis_port,
        postgres_port=postgres_port,
        triggerer_log_port=triggerer_port,
        workers=tuple(dataclasses.replace(w, log_port=p) for w, p in zip(base.workers, log_ports, strict=True)),
    )
    times: dict[str, float] = {}
    try:
        with local_triton(work / "cluster-triton") as triton:
            env = {**clean_env(), "AIRFLOW_CONN_TRITON_DEFAULT": triton_connection(triton)}
            times["up_cold"] = commands.up(settings, env, triton=False)["seconds"]
            api = AirflowApi(settings.api_url)
            deadline = time.monotonic() + 300
            while True:  # the dag-processor parses the DAG after the services answer
                try:
                    api.dag(DAG_ID)
                    break
                except AirflowApiError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            api.set_paused(DAG_ID, False)
            started = time.perf_counter()
            api.trigger(DAG_ID, "bench", f"{DATE}T00:00:00Z")
            run = api.wait_for_run(DAG_ID, "bench", timeout_s=3600, poll_s=1.0)
            times["run"] = time.perf_counter() - started
            if run["state"] != "success":
                raise SystemExit(f"the cluster run ended {run['state']}; logs in {settings.log_dir}")
            started = time.perf_counter()
            commands.down(settings)
            times["down"] = time.perf_counter() - started
            times["up_warm"] = commands.up(settings, env, triton=False)["seconds"]
    finally:
        commands.down(settings)
        shutil.rmtree(state, ignore_errors=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--folds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as tmp:
        work = Path(tmp)
        local = local_run(work, args.epochs, args.folds)
        print(f"LocalExecutor (airflow dags test), one first run: {local:7.1f} s", flush=True)
        times = cluster_run(work, args.epochs, args.folds)
    print(f"Celery cluster, the same run through the scheduler: {times['run']:7.1f} s")
    print(f"  ratio cluster / LocalExecutor: {times['run'] / local:.2f}")
    print(f"cluster up from nothing (initdb, migrate, all parts answering): {times['up_cold']:.1f} s")
    print(f"cluster down: {times['down']:.1f} s; up again with the data kept: {times['up_warm']:.1f} s")


if __name__ == "__main__":
    main()

"""8 sweep trials in the retrain DAG on the local Celery cluster: 1 at a time vs 2 at a time.

    python bench/sweep_cluster.py [--epochs 6]

One fresh copy of the project (digits, few epochs, two folds, no schedule) on the local cluster
(`devtools.cluster`, free ports, a fresh state folder) with two GPU workers of concurrency 1 and
a Triton of its own. Two runs of the retrain DAG, each sweeping the same 8-point grid (the learning
rate x the cnn's widths, pruner off, so both runs train the same 8 trials):
1. baseline: the `gpu` pool at 1 slot, so one trial at a time;
2. the pool at 2 slots, two at a time (the grid's seed differs, which makes it a new study: the
   same 8 points, in another order, all trained again).
Prints each run's sweep wall time (first trial started to last trial ended, from the task
instances) and the ratio 2-at-a-time / 1-at-a-time. Timings on a shared machine are noisy: run it
more than once and compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from cluster_run import DAG_ID, DATE, clean_env, project_copy, triton_connection  # noqa: E402
from support import edit_params, free_ports, local_triton  # noqa: E402

from devtools.airflow_api import AirflowApi, AirflowApiError  # noqa: E402
from devtools.cluster import commands  # noqa: E402
from devtools.cluster.settings import ClusterSettings  # noqa: E402

TRIALS = 8
SPACE = {
    "train.optimizer.lr": {"choices": [0.001, 0.002, 0.004, 0.008]},
    "train.model.channels": {"choices": [[8, 16], [16, 32]]},
}


def sweep_span(api: AirflowApi, run_id: str) -> tuple[float, list[str]]:
    """Seconds from the first trial's start to the last one's end, and the trials' states."""
    trials = [t for t in api.task_instances(DAG_ID, run_id) if t["task_id"] == "sweep.trial" and t["map_index"] >= 0]
    starts = [dt.datetime.fromisoformat(t["start_date"]) for t in trials if t["start_date"]]
    ends = [dt.datetime.fromisoformat(t["end_date"]) for t in trials if t["end_date"]]
    return (max(ends) - min(starts)).total_seconds(), [t["state"] for t in trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as tmp:
        work = Path(tmp)
        project = project_copy(work / "project", args.epochs, 2)
        edit_params(
            project,
            gate__max_regression={"accuracy": 1.0, "f1_macro": 1.0},
            sweep__enabled=True,
            sweep__sampler="grid",
            sweep__trials=TRIALS,
            sweep__seed=0,
            sweep__space=SPACE,
            sweep__pruner={"enabled": False},
        )
        state = Path(tempfile.mkdtemp(prefix="retrain-cluster-bench-"))
        state.chmod(0o755)  # Postgres runs as its own user and must reach its data folder
        api_port, redis_port, postgres_port, triggerer_port, *log_ports = free_ports(7)
        base = ClusterSettings.default(project, state)
        cpu, gpu = base.workers
        workers = (
            dataclasses.replace(cpu, log_port=log_ports[0]),
            dataclasses.replace(gpu, log_port=log_ports[1]),
            dataclasses.replace(gpu, name="gpu-2", log_port=log_ports[2]),
        )
        settings = dataclasses.replace(
            base,
            api_port=api_port,
            redis_port=redis_port,
            postgres_port=postgres_port,
            triggerer_log_port=triggerer_port,
            workers=workers,
        )
        spans: dict[int, float] = {}
        try:
            with local_triton(work / "triton") as triton:
                env = {**clean_env(), "AIRFLOW_CONN_TRITON_DEFAULT": triton_connection(triton)}
                commands.up(settings, env, triton=False)
                api = AirflowApi(settings.api_url)
                deadline = time.monotonic() + 300
                while True:
                    try:
                        if "sweep.trial" in api.task_ids(DAG_ID):
                            break
                    except AirflowApiError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("the dag-processor did not store the DAG with its sweep tasks")
                    time.sleep(2)
                api.set_paused(DAG_ID, False)
                pool = "gpu"
                for hour, slots in enumerate((1, 2)):
                    edit_params(project, sweep__seed=slots)  # a new study: every trial trains again
                    api.set_pool_slots(pool, slots)
                    run_id = f"sweep-{slots}-at-a-time"
                    api.trigger(DAG_ID, run_id, f"{DATE}T{hour:02d}:00:00Z")
                    run = api.wait_for_run(DAG_ID, run_id, timeout_s=3600, poll_s=2.0)
                    span, states = sweep_span(api, run_id)
                    spans[slots] = span
                    print(
                        f"{slots} at a time: {len(states)} trials {sorted(set(states))} in {span:.1f} s (run {run['state']})"
                    )
        finally:
            commands.down(settings)
            shutil.rmtree(state, ignore_errors=True)
    print(f"ratio 2 at a time / 1 at a time: {spans[2] / spans[1]:.2f}")
    print(f"machine load at the end (1, 5, 15 min): {os.getloadavg()}")


if __name__ == "__main__":
    main()

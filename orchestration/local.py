"""Airflow on this machine, for people: one retrain cycle (`make run`) or the web UI (`make airflow`).

Everything Airflow keeps (airflow.cfg, the SQLite database, task logs), the workspace's git remote
(`workspace.git`) and this machine's worker root (task checkouts, DVC cache) live in the ignored
`.airflow/` folder of the project; the DAG folder is the project's `dags/`. The local Triton
(`python -m serving start`) is started when it is not running.

    python -m orchestration run-once [--date YYYY-MM-DD]   # airflow dags test retrain <date>, then what serves
    python -m orchestration ui                               # airflow standalone (UI on 127.0.0.1:8080)
    python -m orchestration registry                         # the model registry: versions, what is in prod
    python -m orchestration results                          # the published version's metrics and reports
    python -m orchestration rollback [--to N]                # Triton serves version N again; #prod moves with it
    python -m orchestration pin                              # list an s3:// data.source into source.pin.json
    python -m orchestration cluster up|down|status           # CeleryExecutor cluster (orchestration/cluster.py)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from orchestration import results
from pipeline.params import Params, load_params

log = logging.getLogger(__name__)

AIRFLOW_DIR = ".airflow"
# Lines of a `dags test` run worth showing a person: our task logs and the run's end.
_SHOWN = re.compile(r"\[(orchestration|stages)\.[\w.]+\]|DagRun Finished|Marking task|ERROR")


LOOPBACK = "127.0.0.1"


def airflow_env(project: Path) -> dict[str, str]:
    """Airflow for one person on this machine: everyone who reaches the UI is an admin (no login),
    so the UI and REST API listen on the loopback interface only. Running it for a team is a
    different configuration (a real auth manager and users; docs/deployment.md, "Running Airflow for a team")."""
    env = dict(os.environ)
    port = env.get("AIRFLOW__API__PORT", "8080")
    env.update(
        {
            "AIRFLOW_HOME": str(project / AIRFLOW_DIR),
            "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
            # the reports page and the tasks' "Reports" links (plugins/retrain_reports.py)
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(project / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # No login: anyone who reaches the UI may approve a deployment or edit a Connection.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # Airflow's default is 0.0.0.0 (every interface); with no login that is the network.
            "AIRFLOW__API__HOST": LOOPBACK,
            # Tasks report to the Execution API on the address it really listens on.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": env.get(
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://{LOOPBACK}:{port}/execution/"
            ),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        }
    )
    return env


def airflow(env: dict[str, str], *args: str) -> str:
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def prepare_airflow(env: dict[str, str], params: Params) -> None:
    """Migrate the metadata database (idempotent) and make sure the GPU pool exists."""
    started = time.perf_counter()
    airflow(env, "db", "migrate")
    af = params.airflow
    airflow(env, "pools", "set", af.gpu_pool, str(af.gpu_pool_slots), "GPU stages of the retrain DAG (airflow.gpu_*)")
    log.info("Airflow database ready in %s (%.1fs)", env["AIRFLOW_HOME"], time.perf_counter() - started)


def ensure_triton(params: Params) -> None:
    from serving.server import ServerSettings, start_server

    state = start_server(ServerSettings.from_params(params.serving))
    log.info("Triton: %s", state.describe())


def last_batch(params: Params) -> dt.date:
    """The date of the newest demo batch: a run on it ingests all of them."""
    return dt.date.fromisoformat(params.embed.first_batch) + dt.timedelta(weeks=params.embed.batches - 1)


def print_served(params: Params) -> None:
    """The serving version, its lineage and metrics, and a prediction through tritonclient."""
    import numpy as np

    from serving.client import predict
    from serving.push import ServingSettings, serving_status

    settings = ServingSettings.from_params(params.serving)
    status = serving_status(settings, params.export.model_name)
    print(f"\nTriton: {status.server}")
    for model in status.models:
        print(f"model {model.model}: version {model.serving} serving (ready: {model.live_ready})")
        for row in model.versions:
            mark = "*" if row.serving else " "
            scored = row.metrics.get("evaluate", row.metrics)  # the push stores evaluate's metrics there
            metrics = {k: round(v, 4) for k, v in scored.items() if k in ("accuracy", "f1_macro")}
            print(f"  {mark} v{row.version}  commit {str(row.git_commit)[:12]}  {metrics}  pushed {row.pushed_at}")
        if model.serving is None:
            continue
        sample = settings.open_repository().golden(model.model, model.serving)  # local folder or s3://
        if sample is not None:
            rows = np.asarray(sample["inputs"][:3], dtype=np.float32)
            probabilities = predict(rows, model.model, settings=settings.client)
            classes = params.data.classes
            print(
                "  sample prediction:",
                [classes[i] for i in probabilities.argmax(axis=1)],
                "expected",
                [classes[i] for i in sample["labels"][:3]] if "labels" in sample else "?",
            )


def run_once(project: Path, date: str | None) -> int:
    params = load_params(project / "params.yaml")
    env = airflow_env(project)
    prepare_airflow(env, params)
    ensure_triton(params)
    date = date or last_batch(params).isoformat()
    logs = project / AIRFLOW_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"run-once-{date}.log"
    print(f"airflow dags test {params.airflow.dag_id} {date}  (full log: {log_file})", flush=True)
    started = time.perf_counter()
    state = "unknown"
    run_id: str | None = None
    with (
        log_file.open("w") as out,
        subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "dags", "test", params.airflow.dag_id, date],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            if _SHOWN.search(line):
                print(line.rstrip()[:300], flush=True)
            found = re.search(r"DagRun Finished: .*? state=(\w+)", line)
            state = found.group(1) if found else state
            named = re.search(r"DagRun Finished: .*?run_id=([^,\s]+)", line)
            run_id = named.group(1) if named else run_id
    print(f"\nrun {state} in {time.perf_counter() - started:.0f}s", flush=True)
    print_served(params)
    print_registry(project)
    results.show(project, run_id)
    return 0 if state == "success" else 1


def print_registry(project: Path) -> None:
    """What the model registry on the workspace's git remote says (GTO tags)."""
    from orchestration import registry
    from orchestration.workspace import Workspace
    from pipeline.errors import StageError

    ws = Workspace.resolve(project)
    try:
        shown = registry.show(ws)
    except StageError as error:
        print(f"registry: {error}")
        return
    for model, row in shown.items():
        stages = ", ".join(f"#{stage} {version}" for stage, version in (row.get("stage") or {}).items())
        print(f"registry {model}: latest {row.get('version')}; {stages or 'no stage assigned'}")
    print(
        f"published versions: git clone {ws.git_remote} && git checkout {ws.params.tag_prefix}<N> && dvc pull  "
        "(gto show there lists them)"
    )


def rollback(project: Path, to: int | None) -> int:
    """Serve an earlier version on Triton, then move the registry's stage to it."""
    from orchestration import registry, workspace
    from orchestration.workspace import Workspace
    from pipeline.errors import StageError
    from serving.push import PushError, ServingSettings
    from serving.push import rollback as serving_rollback

    params = load_params(project / "params.yaml")
    model = params.export.model_name
    try:
        result = serving_rollback(model, ServingSettings.from_params(params.serving), to=to)
    except PushError as error:
        print(f"rollback failed: {error}", file=sys.stderr)
        return 1
    print(f"{model}: version {result.serving} serves (was {result.previous})")
    try:
        tag = registry.promote(
            Workspace.resolve(project), model, int(result.version), f"rolled back from {result.previous}"
        )
    except StageError as error:
        print(f"registry unchanged: {error}", file=sys.stderr)
        return 1
    print(f"registry: {tag}")
    try:  # the next run's data is compared with what serves again
        from orchestration.steps import Fleet, rollback_reference

        head = rollback_reference(
            Fleet.resolve(project), int(result.version), workspace.safe_run_key(f"rollback-{time.time():.0f}")
        )
    except StageError as error:
        print(f"drift reference unchanged: {error}", file=sys.stderr)
        return 1
    if head:
        print(f"drift reference: the data of version {result.version} (commit {head[:12]})")
    return 0


def ui(project: Path) -> None:
    params = load_params(project / "params.yaml")
    env = airflow_env(project)
    prepare_airflow(env, params)
    ensure_triton(params)
    port = env.get("AIRFLOW__API__PORT", "8080")
    print(
        f"Airflow UI: http://{LOOPBACK}:{port}, on this machine only (no login: everyone is admin). "
        "Ctrl-C stops it; Triton keeps running: `python -m serving stop`"
    )
    airflow_bin = str(Path(sys.executable).parent / "airflow")
    os.execve(airflow_bin, [airflow_bin, "standalone"], env)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m orchestration", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="project root (default: the current folder)")
    commands = parser.add_subparsers(dest="command", required=True)
    once = commands.add_parser("run-once", help="one retrain cycle through Airflow, then print what serves")
    once.add_argument("--date", help="logical date YYYY-MM-DD (default: the newest demo batch)")
    commands.add_parser("ui", help="Airflow with the web UI (airflow standalone)")
    commands.add_parser("registry", help="the model registry on the workspace's git remote (gto show)")
    commands.add_parser("results", help="check out the published version's metrics and reports in .airflow/results")
    commands.add_parser(
        "pin", help="list data.source (an s3:// prefix) into source.pin.json and point data.source at it"
    )
    back = commands.add_parser("rollback", help="serve an earlier version again and move the registry's stage to it")
    back.add_argument("--to", type=int, help="version to serve (default: the one before the serving one)")
    cluster = commands.add_parser("cluster", help="a local CeleryExecutor cluster: up | down | status", add_help=False)
    cluster.add_argument("cluster_args", nargs=argparse.REMAINDER)
    args, unknown = parser.parse_known_args(argv)  # `cluster` takes its own options (and --help)
    if unknown and args.command != "cluster":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    project = Path(args.project).resolve()
    os.chdir(project)  # params.yaml's relative paths (the Triton repository) are relative to it
    if args.command == "run-once":
        sys.exit(run_once(project, args.date))
    if args.command == "registry":
        print_registry(project)
        return
    if args.command == "results":
        sys.exit(results.show(project))
    if args.command == "pin":
        from orchestration.pinning import pin_checkout

        pinned = pin_checkout(project)
        print(json.dumps(pinned) if pinned else "data.source is a local path: DVC versions it as it is; nothing to pin")
        return
    if args.command == "rollback":
        sys.exit(rollback(project, args.to))
    if args.command == "cluster":
        from orchestration.cluster import main as cluster_main

        sys.exit(cluster_main(project, [*unknown, *args.cluster_args]))
    ui(project)

"""Airflow on this machine, for people: one retrain cycle (`make run`) or the web UI (`make airflow`).

Everything Airflow keeps (airflow.cfg, the SQLite database, task logs), the workspace's git remote
(`workspace.git`) and this machine's worker root (task checkouts, DVC cache) live in the ignored
`.airflow/` folder of the project; the DAG folder is the project's `dags/`. The local Triton
(`python -m serving start`) is started when it is not running. The commands: `devtools/cli.py`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from devtools import results
from devtools.airflow_home import AIRFLOW_DIR, LOOPBACK, airflow_bin, airflow_env, prepare_airflow
from devtools.triton import ensure_triton
from orchestration.params import ProjectParams, load_project_params

log = logging.getLogger(__name__)

# Lines of a `dags test` run worth showing a person: our task logs and the run's end.
_SHOWN = re.compile(r"\[(orchestration|stages)\.[\w.]+\]|DagRun Finished|Marking task|ERROR")


def last_batch(params: ProjectParams) -> dt.date:
    """The date of the newest demo batch: a run on it ingests all of them."""
    return dt.date.fromisoformat(params.embed.first_batch) + dt.timedelta(weeks=params.embed.batches - 1)


def print_served(params: ProjectParams) -> None:
    """What serves: the pinned version, its lineage and metrics, and a prediction through
    tritonclient. Whatever state the server is in (down, serving nothing, serving another
    version), each problem is one line, never a traceback."""
    from pipeline.errors import StageError
    from serving.client import INTERNAL_REQUEST_ID, ClientError, ServerUnreachable, TritonClient
    from serving.loading import golden_inputs
    from serving.settings import ServingSettings
    from serving.status import serving_status

    try:
        settings = ServingSettings.from_params(params.serving)
        status = serving_status(settings, params.export.model_name)
    except StageError as error:  # bad TRITON_* settings, an unreadable repository
        print(f"\nTriton: cannot tell what serves: {error}")
        return
    print(f"\nTriton: {status.server}")
    for model in status.models:
        if model.serving is None:
            print(f"model {model.model}: no version pinned yet (nothing was pushed)")
            continue
        live = {True: "ready", False: "NOT ready", None: "unknown"}[model.live_ready]
        print(f"model {model.model}: version {model.serving} pinned, {live} on the server")
        if model.problem:
            print(f"  problem: {model.problem}")
        for row in model.versions:
            mark = "*" if row.serving else " "
            scored = row.metrics.get("evaluate", row.metrics)  # the push stores evaluate's metrics there
            metrics = {k: round(v, 4) for k, v in scored.items() if k in ("accuracy", "f1_macro")}
            print(f"  {mark} v{row.version}  commit {str(row.git_commit)[:12]}  {metrics}  pushed {row.pushed_at}")
        sample = settings.open_repository().golden(model.model, model.serving)  # local folder or s3://
        if not model.live_ready or sample is None:
            continue
        inputs = golden_inputs(sample)
        rows = {k: v[:3] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:3]
        try:
            with TritonClient(settings.client) as client:
                probabilities = client.predict(model.model, rows, version=model.serving, request_id=INTERNAL_REQUEST_ID)
        except (ClientError, ServerUnreachable) as error:
            print(f"  sample prediction: none ({error})")
            continue
        print(
            "  sample prediction:",
            [params.data.classes[i] for i in probabilities.argmax(axis=1)],
            "expected",
            sample.labels[:3] or "?",
        )


def dags_test_command(dag_id: str, as_of: str) -> list[str]:
    """`airflow dags test` of a run of its own, dated now: its start and duration in the UI are
    real, and every call adds a run to the history (a fixed logical date would replace the last
    one and record that date as its start). The demo data's date goes in as the Trigger form's
    `as_of` (dags/retrain.py)."""
    return [airflow_bin(), "dags", "test", dag_id, "--conf", json.dumps({"as_of": as_of})]


def run_once(project: Path, date: str | None) -> int:
    """One retrain cycle through Airflow on the demo data as of `date` (default: the newest
    batch), then what serves, the registry and the published version's reports."""
    params = load_project_params(project / "params.yaml")
    env = airflow_env(project)
    prepare_airflow(env, params.airflow)
    ensure_triton(params)
    as_of = date or last_batch(params).isoformat()
    logs = project / AIRFLOW_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"run-once-{dt.datetime.now():%Y%m%dT%H%M%S}.log"  # one per run: a name, not logic
    command = dags_test_command(params.airflow.dag_id, as_of)
    print(f"{' '.join(command[1:])}  (full log: {log_file})", flush=True)
    started = time.perf_counter()
    state = "unknown"
    run_id: str | None = None
    with (
        log_file.open("w") as out,
        subprocess.Popen(
            command,
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
    from serving.errors import PushError
    from serving.push import rollback as serving_rollback
    from serving.settings import ServingSettings

    params = load_project_params(project / "params.yaml")
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
    params = load_project_params(project / "params.yaml")
    env = airflow_env(project)
    prepare_airflow(env, params.airflow)
    ensure_triton(params)
    port = env.get("AIRFLOW__API__PORT", "8080")
    print(
        f"Airflow UI: http://{LOOPBACK}:{port}, on this machine only (no login: everyone is admin). "
        "Ctrl-C stops it; Triton keeps running: `python -m serving stop`"
    )
    os.execve(airflow_bin(), [airflow_bin(), "standalone"], env)

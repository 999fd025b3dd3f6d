"""What the retraining DAG's tasks do when they run (dags/retrain.py only declares them).

Each function is one task's body, a thin layer over `orchestration.steps`: it reads the run's
values from the Airflow context and XCom (small dicts: commits, lock entries, versions; never data),
resolves this worker's settings and turns expected failures into Airflow's terms. Heavy imports
happen here, at run time, on the worker that runs the task.

Failures: a stage command that fails, or results that do not fit together, fail the task at once
(`AirflowFailException`: a retry would do the same). An unreachable DVC or git remote, or a worker
that died, is infrastructure: the task raises and Airflow retries it with backoff, on any worker.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestration import steps
from orchestration.workspace import tool_env

log = logging.getLogger(__name__)

PREPARE_TASK = "prepare_workspace"


# --- settings ---------------------------------------------------------------------------------
def dvc_remote_connection(conn_id: str) -> dict[str, Any] | None:
    """The DVC remote's credentials from the Airflow Connection `conn_id` (login = access key id,
    password = secret access key; extra `region_name`, `endpoint_url`), or None without one."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    log.info("DVC remote credentials from Airflow Connection %r", conn_id)
    return {"login": conn.login, "password": conn.password, "extra": conn.extra_dejson}


def fleet(project: str | Path) -> steps.Fleet:
    from orchestration.remote import URL_ENV
    from pipeline.params import load_params

    af = load_params(Path(project) / "params.yaml").airflow
    url = os.environ.get(URL_ENV) or af.dvc_remote or ""
    # a local folder needs no credentials: skip the lookup (one per task)
    connection = dvc_remote_connection(af.dvc_remote_conn_id) if "://" in url or not url else None
    return steps.Fleet.resolve(project, connection=connection)


def results(context: Mapping[str, Any], task_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The XCom values of `task_ids` in this run (a task that returned nothing is left out)."""
    if not task_ids:
        return []
    pulled = context["ti"].xcom_pull(task_ids=list(task_ids))
    return [value for value in pulled if value]


def failing_fast(call: Any) -> Any:
    """Run `call`; a failed stage or mismatched results fail the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from orchestration.dvc_runner import StageFailed
    from orchestration.lockfile import LockMergeError

    try:
        return call()
    except (StageFailed, LockMergeError) as error:
        raise AirflowFailException(str(error)) from error


# --- prepare --------------------------------------------------------------------------------
def run_date(context: Mapping[str, Any]) -> dt.date:
    """The date a run stands for: its data-interval end, else its logical date, else when it ran
    (asset-triggered and manual runs may have no data interval in Airflow 3)."""
    for key in ("data_interval_end", "logical_date"):
        value = context.get(key)
        if value is not None:
            return value.date()
    return context["dag_run"].run_after.date()


def prepare(project: str | Path, context: Mapping[str, Any]) -> dict[str, Any]:
    """The run's commit on the workspace's git remote; in demo mode, embed.as_of = the run's date."""
    setup = fleet(project)
    as_of = run_date(context).isoformat() if setup.ws.params.demo_batches else None
    return steps.prepare(setup, context["run_id"], as_of)


# --- stages ---------------------------------------------------------------------------------
def stage(project: str | Path, name: str, ancestors: Sequence[str], context: Mapping[str, Any]) -> dict[str, Any]:
    """Stage `name` in a checkout of this worker; `ancestors` are the task ids of the stages it
    depends on, whose results carry the dvc.lock entries it starts from."""
    ti = context["ti"]
    prepared = ti.xcom_pull(task_ids=PREPARE_TASK)
    upstream = results(context, ancestors)
    setup = fleet(project)
    return failing_fast(lambda: steps.stage(setup, context["run_id"], prepared, name, upstream, ti.try_number))


# --- Triton settings ------------------------------------------------------------------------
def triton_env(conn_id: str) -> dict[str, str]:
    """TRITON_* variables (what serving/ reads) from the Airflow Connection `conn_id`.

    URL from conn type + host + port (`http`, `https`, `grpc`, `grpcs`), an auth token from the
    password, and from the extra: `headers` (JSON object), `model_repository` (the live repository
    the push writes to), `ssl_ca_file`, `ssl_cert_file`, `ssl_key_file`, `ssl_insecure`. With no
    such Connection, the environment and params.yaml `serving:` apply (the local server).
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        log.info("no Airflow Connection %r: Triton settings from TRITON_* / params.yaml serving:", conn_id)
        return {}
    env: dict[str, str] = {}
    scheme = (conn.conn_type or "http").lower()
    protocol = "grpc" if scheme.startswith("grpc") else "http"
    if conn.host:
        host = conn.host.split("://")[-1].rstrip("/")
        env["TRITON_URL"] = f"{scheme if scheme in ('http', 'https', 'grpc', 'grpcs') else protocol}://{host}"
        if conn.port:
            env["TRITON_URL"] += f":{conn.port}"
    env["TRITON_PROTOCOL"] = protocol
    if conn.password:
        env["TRITON_AUTH_TOKEN"] = conn.password
    extra = conn.extra_dejson
    if extra.get("headers"):
        headers = extra["headers"]
        env["TRITON_HEADERS"] = headers if isinstance(headers, str) else json.dumps(headers)
    for key in ("model_repository", "ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
        if extra.get(key):
            env[f"TRITON_{key.upper()}"] = str(extra[key])
    if extra.get("ssl_insecure"):
        env["TRITON_SSL_INSECURE"] = "1"
    log.info("Triton from Connection %r: %s (%s)", conn_id, env.get("TRITON_URL", "local default"), protocol)
    return env


# --- gate -----------------------------------------------------------------------------------
def gate(
    project: str | Path,
    evaluate_args: Mapping[str, str],
    conn_id: str,
    stage_ids: Sequence[str],
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """Run `python -m stages.gate` in a checkout holding the candidate and its test rows. A
    rejection skips the push (the run stays green: rejecting a worse model is the gate doing its
    job) and the champion keeps serving."""
    from airflow.sdk.exceptions import AirflowSkipException

    from pipeline.params import load_params
    from stages.gate import REJECTED_EXIT

    ti = context["ti"]
    setup = fleet(project)
    root = failing_fast(
        lambda: steps.checkout_outputs(
            setup,
            context["run_id"],
            ti.xcom_pull(task_ids=PREPARE_TASK),
            results(context, stage_ids),
            "gate",
            list(evaluate_args.values()),
            ti.try_number,
        )
    )
    report_path = load_params(root / "params.yaml").gate.report
    cmd = [sys.executable, "-m", "stages.gate", *(f"--{k}={v}" for k, v in evaluate_args.items())]
    cmd.append(f"--report={report_path}")
    log.info("$ %s  (in %s)", " ".join(cmd[1:]), root)
    result = subprocess.run(cmd, cwd=root, env={**tool_env(), **triton_env(conn_id)}, capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        log.info("%s", line)
    if result.returncode not in (0, REJECTED_EXIT):
        raise RuntimeError(f"the gate failed (exit {result.returncode}); see the lines above")
    report = json.loads((root / report_path).read_text())
    log.info("gate %s\n%s", report["reason"], report["diff_markdown"])
    if not report["passed"]:
        raise AirflowSkipException(f"candidate {report['reason']}; the champion keeps serving")
    return report


# --- push -----------------------------------------------------------------------------------
def serving_settings(project: Path, conn_id: str) -> Any:
    """The serving code's settings: params `serving:` of the project, the Connection's TRITON_*
    over the environment, and a relative model repository taken relative to the project (where
    `python -m serving start` runs the local server). A repository URL (`s3://...`) passes
    through as it is."""
    from pipeline.params import load_params
    from serving.push import ServingSettings

    params = load_params(project / "params.yaml").serving
    env = {**os.environ, **triton_env(conn_id)}
    repository = env.get("TRITON_MODEL_REPOSITORY") or params.repository
    if "://" not in repository:
        env["TRITON_MODEL_REPOSITORY"] = str(project / repository)
    return ServingSettings.from_params(params, env)


def push(
    project: str | Path,
    evaluate_args: Mapping[str, str],
    conn_id: str,
    stage_ids: Sequence[str],
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """Push the run's candidate with the serving code; an identical model pushes nothing.
    An unreachable server raises for Airflow to retry; a candidate that fails to load or answers
    wrongly fails the task at once (the serving code has put the previous version back)."""
    from airflow.sdk.exceptions import AirflowFailException

    from serving.client import ServerUnreachable
    from serving.push import PushError, push_candidate

    ti = context["ti"]
    setup = fleet(project)
    paths = [evaluate_args["candidate"], evaluate_args["metrics"]]
    root = failing_fast(
        lambda: steps.checkout_outputs(
            setup,
            context["run_id"],
            ti.xcom_pull(task_ids=PREPARE_TASK),
            results(context, stage_ids),
            "push",
            paths,
            ti.try_number,
        )
    )
    settings = serving_settings(setup.ws.project, conn_id)
    log.info(
        "pushing %s to %s (repository %s)", evaluate_args["candidate"], settings.client.describe(), settings.repository
    )
    try:
        result = push_candidate(root / evaluate_args["candidate"], settings, metrics=root / evaluate_args["metrics"])
    except PushError as error:
        if isinstance(error.__cause__, ServerUnreachable):
            raise  # infrastructure: Airflow retries with backoff
        raise AirflowFailException(str(error)) from error
    created = result.status == "pushed"
    if created:
        log.info("%s version %d is serving (was %s)", result.model, result.version, result.previous)
    else:
        log.info(
            "%s: the candidate is stored already as version %d; nothing pushed, version %s keeps serving",
            result.model,
            result.version,
            result.serving,
        )
    return {
        "model": result.model,
        "version": result.version,
        "serving": result.serving,
        "previous": result.previous,
        "created": created,
        "seconds": round(result.seconds.get("total", 0.0), 2),
    }


# --- publish --------------------------------------------------------------------------------
def publish_run(
    project: str | Path,
    pushed: Mapping[str, Any],
    stage_ids: Sequence[str],
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """After a push that created a version: one dvc.lock from every stage's entry, checked
    against the DVC remote, committed, tagged and pushed with the registry's tags."""
    from airflow.sdk.exceptions import AirflowSkipException

    from orchestration.workspace import remote_ref

    setup = fleet(project)
    tag = f"{setup.ws.params.tag_prefix}{pushed['version']}"
    if not pushed.get("created", True) and remote_ref(setup.ws, f"refs/tags/{tag}"):
        raise AirflowSkipException(
            f"{pushed.get('model')} version {pushed.get('version')} already served this exact model and is "
            f"published as {tag}; nothing new to publish"
        )
    # (a version stored by an earlier run whose publish never finished is published now)
    ti = context["ti"]
    prepared = ti.xcom_pull(task_ids=PREPARE_TASK)
    summary = f"data as of {prepared.get('as_of') or 'all batches'}; source {prepared.get('source_commit')}"
    return failing_fast(
        lambda: steps.publish(
            setup,
            context["run_id"],
            prepared,
            results(context, stage_ids),
            int(pushed["version"]),
            str(pushed.get("model", "")),
            f"{pushed.get('model')} version {pushed['version']}; {summary}",
            ti.try_number,
        )
    )

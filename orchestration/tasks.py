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

import dataclasses
import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration import ending, pinning, steps
from orchestration.run_values import PreparedRun, PushedVersion, ServedEvent

if TYPE_CHECKING:
    from orchestration.params import ProjectParams
    from serving.settings import ServingSettings

log = logging.getLogger(__name__)

PREPARE_TASK = "prepare_workspace"
SWEEP_CHOOSE_TASK = "sweep.choose"  # with `sweep.enabled`: the run's commit with the winner's params


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


def project_params(project: str | Path) -> ProjectParams:
    """The project's params.yaml: read once per task, and handed to everything the task resolves."""
    from orchestration.params import load_project_params

    return load_project_params(Path(project) / "params.yaml")


def fleet(project: str | Path, params: ProjectParams) -> steps.Fleet:
    from orchestration.remote import URL_ENV

    af = params.airflow
    url = os.environ.get(URL_ENV) or af.dvc_remote or ""
    # a local folder needs no credentials: skip the lookup (one per task)
    connection = dvc_remote_connection(af.dvc_remote_conn_id) if "://" in url or not url else None
    return steps.Fleet.resolve(project, connection=connection, params=af)


def results(context: Mapping[str, Any], task_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The XCom values of `task_ids` in this run (a task that returned nothing is left out)."""
    if not task_ids:
        return []
    pulled = context["ti"].xcom_pull(task_ids=list(task_ids))
    return [value for value in pulled if value]


def prepared_run(ti: Any) -> PreparedRun:
    """The run's commit: prepare_workspace's, or, once a sweep has chosen, the commit that holds
    its winner's params (the stages that read `train` wait for it; the others may use either: the
    two differ only in the swept keys)."""
    chosen = ti.xcom_pull(task_ids=SWEEP_CHOOSE_TASK)  # None: no sweep in this DAG, or not chosen yet
    return PreparedRun.from_xcom(chosen or ti.xcom_pull(task_ids=PREPARE_TASK))


def failing_fast(call: Any, cause_file: Path | None = None) -> Any:
    """Run `call`; a failed stage or mismatched results fail the task without retries. The stage's
    own failure paragraph (in `cause_file`, see stages/_cli.py) leads the task's error."""
    from airflow.sdk.exceptions import AirflowFailException

    from orchestration.dvc_runner import StageFailed
    from orchestration.lockfile import LockMergeError

    try:
        return call()
    except (StageFailed, LockMergeError) as error:
        cause = cause_file.read_text().strip() if cause_file and cause_file.is_file() else ""
        raise AirflowFailException(f"{cause}\n({error})" if cause else str(error)) from error


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
    """The run's commit on the workspace's git remote; in demo mode, embed.as_of = the Trigger
    form's "as_of", else the run's date. The form's values are checked here, before any stage runs."""
    from airflow.sdk.exceptions import AirflowFailException

    setup = fleet(project, project_params(project))
    form = context.get("params") or {}
    try:
        overrides = form_overrides(setup.ws.project, form)
        as_of = demo_as_of(setup.ws.params.demo_batches, form, context)
    except ValueError as error:
        raise AirflowFailException(f"the run's parameters (Trigger form) are invalid: {error}") from error
    if form.get("note"):
        log.info("note: %s", form["note"])
    log.info(
        "require approval: %s; params set by the form: %s", bool(form.get("require_approval")), overrides or "none"
    )
    # a data source in S3 is listed (pinned) here, with the Connection's credentials
    with pinning.environment(pinning.source_env(setup.ws.params.source_conn_id)):
        prepared = steps.prepare(setup, context["run_id"], as_of, overrides)
    return dataclasses.replace(prepared, note=form.get("note") or "", overrides=overrides).to_xcom()


def demo_as_of(demo_batches: bool, form: Mapping[str, Any], context: Mapping[str, Any]) -> str | None:
    """embed.as_of of a demo run (the weekly batches it ingests): the Trigger form's "as_of" when
    given, else the run's date; None outside demo mode. A date that is not YYYY-MM-DD, or one given
    outside demo mode, raises ValueError naming it."""
    given = (form.get("as_of") or "").strip()
    if not demo_batches:
        if given:
            raise ValueError(f"as_of {given!r} applies to the demo batches only (airflow.demo_batches); leave it empty")
        return None
    if not given:
        return run_date(context).isoformat()
    try:
        return dt.date.fromisoformat(given).isoformat()
    except ValueError:
        raise ValueError(f"as_of {given!r} is not a date YYYY-MM-DD") from None


def form_overrides(project: Path, form: Mapping[str, Any]) -> dict[str, str | None]:
    """The params.yaml keys the Trigger form sets for this run, checked: a data source that does
    not exist here, or params that no longer load, raise ValueError naming the cause."""

    from orchestration.params import ProjectParams
    from orchestration.workspace import set_param
    from pipeline.params import read_yaml

    overrides: dict[str, str | None] = {}
    source = (form.get("data_source") or "").strip()
    if source:
        if "://" not in source:
            path = Path(source) if Path(source).is_absolute() else project / source
            if not path.exists():
                raise ValueError(
                    f"data_source {source!r} does not exist on this worker ({path}); give a CSV or Parquet "
                    "file or folder that every worker can read (relative to the project, or absolute), "
                    "or leave it empty for data.source"
                )
        overrides["data.source"] = source
    text = (project / "params.yaml").read_text()
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        text = set_param(text, section, key, value)
    try:
        ProjectParams.model_validate(read_yaml(text))
    except Exception as error:  # pydantic's ValidationError names the key
        raise ValueError(f"params.yaml with {overrides} does not load: {error}") from error
    return overrides


# --- stages ---------------------------------------------------------------------------------
def stage(project: str | Path, name: str, ancestors: Sequence[str], context: Mapping[str, Any]) -> dict[str, Any]:
    """Stage `name` in a checkout of this worker; `ancestors` are the task ids of the stages it
    depends on, whose results carry the dvc.lock entries it starts from."""
    from airflow.sdk.exceptions import AirflowFailException

    from stages._cli import FAILURE_FILE_ENV

    ti = context["ti"]
    prepared = prepared_run(ti)
    upstream = results(context, ancestors)
    params = project_params(project)
    setup = fleet(project, params)
    from orchestration.spark_connection import spark_env

    with tempfile.TemporaryDirectory(prefix="stage-failure-") as tmp:
        cause = Path(tmp) / "cause.txt"
        # DVC passes the environment on to the stage command.
        added = {
            FAILURE_FILE_ENV: str(cause),
            **spark_env(params),
            **pinning.source_env(setup.ws.params.source_conn_id),
        }
        with pinning.environment(added):
            try:
                result = failing_fast(
                    lambda: steps.stage(setup, context["run_id"], prepared, name, upstream, ti.try_number), cause
                )
            except AirflowFailException as error:  # what the reports page shows in place of the reports
                ending.record(context, "failed", str(error))
                raise
    return result


# --- Triton settings ------------------------------------------------------------------------
def serving_settings(project: str | Path, conn_id: str, params: ProjectParams) -> ServingSettings:
    """The serving code's settings, resolved once: params `serving:`, this worker's TRITON_* and
    the Airflow Connection `conn_id` (orchestration/triton_hook.py). A Connection that cannot be
    used as it is fails the task at once (a retry would do the same)."""
    from airflow.sdk.exceptions import AirflowFailException

    from orchestration.triton_hook import TritonConnectionError, TritonHook

    try:
        return TritonHook(conn_id, project=Path(project).resolve(), serving=params.serving).get_conn()
    except TritonConnectionError as error:
        raise AirflowFailException(str(error)) from error


# --- gate -----------------------------------------------------------------------------------
def run_outputs(
    setup: steps.Fleet, context: Mapping[str, Any], stage_ids: Sequence[str], task: str, paths: Sequence[str]
) -> Path:
    """A checkout of this run for `task` (its merged lock from the stage tasks' results) with
    `paths`, outputs of the run, pulled from the DVC remote."""
    ti = context["ti"]
    return failing_fast(
        lambda: steps.checkout_outputs(
            setup,
            context["run_id"],
            prepared_run(ti),
            results(context, stage_ids),
            task,
            list(paths),
            ti.try_number,
        )
    )


def gate(
    project: str | Path,
    evaluate_args: Mapping[str, str],
    conn_id: str,
    stage_ids: Sequence[str],
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """The gate's decision as this task's value: `stages.gate.run` called in-process on a checkout
    holding the candidate and its test rows, against the champion where the push would write. A
    rejection skips the push (the run stays green: rejecting a worse model is the gate doing its
    job) and the champion keeps serving. The report also lands in the checkout (`gate.report`)."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from orchestration.params import load_project_params
    from pipeline import atomic
    from pipeline.errors import StageError
    from stages import gate as gate_stage

    project_wide = project_params(project)
    setup = fleet(project, project_wide)
    args = dict(evaluate_args)
    if setup.drift:  # the drift stage's summary goes into the report and the approval page
        args["drift"] = setup.drift.metrics
    root = run_outputs(setup, context, stage_ids, "gate", list(args.values()))
    params = load_project_params(root / "params.yaml")  # the run's own (the Trigger form may have set keys)
    # The champion is the version pinned in the repository the push writes to (not the checkout's).
    settings = serving_settings(setup.ws.project, conn_id, project_wide)
    paths = SimpleNamespace(**{key: str(root / path) for key, path in args.items()})
    try:
        decision = gate_stage.run(paths, params.data, settings, params.gate, params.tune)
    except StageError as error:  # an unreachable server, a champion not READY, a missing metric
        ending.record(context, "failed", f"gate failed: {error}")
        raise AirflowFailException(f"gate failed: {error}") from error
    report = decision.to_json()
    atomic.write_json(root / params.gate.report, report)
    log.info("gate %s\n%s", decision.reason, report["diff_markdown"])
    if not decision.passed:
        ending.record(context, "rejected", f"candidate {decision.reason}; the champion keeps serving", report=report)
        raise AirflowSkipException(f"candidate {decision.reason}; the champion keeps serving")
    return report


# --- push -----------------------------------------------------------------------------------
def push(
    project: str | Path,
    evaluate_args: Mapping[str, str],
    conn_id: str,
    stage_ids: Sequence[str],
    context: Mapping[str, Any],
    served: Any = None,
) -> dict[str, Any]:
    """Push the run's candidate with the serving code; an identical model pushes nothing. In a
    shadow or canary rollout (params `rollout.mode`), start it instead (orchestration/rollout_start.py).
    `served` (the DAG's `triton://<model>` asset) gets an event whose extra says what serves now.
    An unreachable server raises for Airflow to retry; a candidate that fails to load or answers
    wrongly fails the task at once (the serving code has put the previous version back)."""
    from airflow.sdk.exceptions import AirflowFailException

    from serving.client import ServerUnreachable
    from serving.errors import PushError
    from serving.push import push_candidate

    params = project_params(project)
    setup = fleet(project, params)
    paths = [evaluate_args["candidate"], evaluate_args["metrics"]]
    root = run_outputs(setup, context, stage_ids, "push", paths)
    settings = serving_settings(setup.ws.project, conn_id, params)
    log.info(
        "pushing %s to %s (repository %s)", evaluate_args["candidate"], settings.client.describe(), settings.repository
    )
    try:
        if params.rollout.mode != "direct":  # the rollout task watches it and publishes the outcome
            from orchestration.rollout_start import start

            return start(root, evaluate_args["candidate"], evaluate_args["metrics"], settings, params).to_xcom()
        result = push_candidate(root / evaluate_args["candidate"], settings, metrics=root / evaluate_args["metrics"])
    except PushError as error:
        if isinstance(error.__cause__, ServerUnreachable):
            raise  # infrastructure: Airflow retries with backoff
        raise AirflowFailException(str(error)) from error
    created = result.status == "pushed"
    log.info(
        "%s version %d is serving (was %s)" if created else "%s: version %d holds the candidate already; %s serves",
        result.model,
        result.version,
        result.previous if created else result.serving,
    )
    pushed = PushedVersion(
        model=result.model,
        version=result.version,
        serving=result.serving,
        previous=result.previous,
        created=created,
        seconds=round(result.seconds.get("total", 0.0), 2),
    )
    if served is not None:
        event = served_event(pushed, root / evaluate_args["candidate"], root / evaluate_args["metrics"], setup, context)
        context["outlet_events"][served].extra = event.to_xcom()
    return pushed.to_xcom()


def served_event(
    pushed: PushedVersion, candidate: Path, metrics: Path, setup: steps.Fleet, context: Mapping[str, Any]
) -> ServedEvent:
    """What the served-model asset event records: version, test metrics, the data it was trained
    on (DVC md5s), the source commit and the git tag publish gives this version."""
    from pipeline.candidate import CARD_FILE, read_card

    card = read_card(candidate / CARD_FILE)
    return ServedEvent(
        model=pushed.model,
        version=pushed.version,
        previous=pushed.previous,
        created=pushed.created,
        git_tag=f"{setup.ws.params.tag_prefix}{pushed.version}",
        git_commit=card.git_commit,
        metrics=json.loads(metrics.read_text()) if metrics.is_file() else {},
        data=card.data,
        run_id=context["run_id"],
    )


# --- publish --------------------------------------------------------------------------------
def publish_run(
    project: str | Path,
    pushed_value: Mapping[str, Any],
    prepared_value: Mapping[str, Any],
    stage_ids: Sequence[str],
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """After a push that created a version: one dvc.lock from every stage's entry, checked
    against the DVC remote, committed, tagged and pushed with the registry's tags. `pushed` and
    `prepared` are the push's and prepare_workspace's values (TaskFlow arguments)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from orchestration.workspace import remote_ref

    pushed, prepared = PushedVersion.from_xcom(pushed_value), PreparedRun.from_xcom(prepared_value)
    if pushed.rollout is not None and pushed.rollout.get("status") != "promoted":
        raise AirflowSkipException(
            f"the rollout of {pushed.model} version {pushed.version} was not promoted: {pushed.rollout}"
        )
    setup = fleet(project, project_params(project))
    tag = f"{setup.ws.params.tag_prefix}{pushed.version}"
    if not pushed.created and remote_ref(setup.ws, f"refs/tags/{tag}"):
        raise AirflowSkipException(
            f"{pushed.model} version {pushed.version} already served this exact model and is "
            f"published as {tag}; nothing new to publish"
        )
    # (a version stored by an earlier run whose publish never finished is published now)
    ti = context["ti"]
    summary = f"data as of {prepared.as_of or 'all batches'}; source {prepared.source_commit}"
    return failing_fast(
        lambda: steps.publish(
            setup,
            context["run_id"],
            prepared,
            results(context, stage_ids),
            pushed.version,
            pushed.model,
            f"{pushed.model} version {pushed.version}; {summary}",
            ti.try_number,
        )
    )

"""
### Retrain: `dvc.yaml` as an Airflow DAG

One task per DVC stage, generated from `dvc.yaml` when this file is parsed (foreach items such as
the cross-validation folds become parallel tasks in a group); dependencies follow the stages'
deps and outs. Each task runs `dvc repro --single-item <stage>` in the workspace, so DVC's cache
decides what really runs, and an unchanged stage finishes in seconds.

Then **gate** (the candidate's test metrics against the model Triton serves now, scored live on the
same rows, with the floors and maximum regression of `gate:` in params.yaml), an optional human
**approve**al, **push** to Triton, and **publish** (`dvc push`, commit and tag `model-v<N>` in the
workspace). A rejected candidate skips the push and the champion keeps serving.

Configured by `airflow:` in params.yaml: schedule and data asset, GPU stages, queue and pool,
approval, workspace, DVC remote, the Triton Connection.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, TaskGroup, task

from orchestration.spec import pipeline_spec

PROJECT = Path(os.environ.get("RETRAIN_PROJECT_DIR") or Path(__file__).resolve().parents[1])
SPEC = pipeline_spec(PROJECT)  # reads params.yaml and dvc.yaml: the only I/O at parse time
AF = SPEC.airflow

INFRA_RETRIES = {
    "retries": AF.infra_retries,
    "retry_delay": dt.timedelta(seconds=AF.infra_retry_delay_s),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=10),
}


def schedule():
    """The weekly cron, the raw-data asset, or whichever comes first."""
    asset = None
    if AF.data_asset:
        asset = Asset(uri=AF.data_asset) if "://" in AF.data_asset else Asset(name=AF.data_asset)
    if AF.schedule and asset:
        return AssetOrTimeSchedule(timetable=CronTriggerTimetable(AF.schedule, timezone="UTC"), assets=asset)
    return [asset] if asset else AF.schedule


@task(
    doc_md="""### Prepare the workspace
Mirrors the project's sources (what git tracks) into the workspace repository, keeping the
workspace's own `dvc.lock` and outputs. In demo mode it sets `embed.as_of` to this run's
data-interval end, so the run ingests the weekly batches that have arrived by then.""",
)
def prepare_workspace(**context) -> dict:
    from orchestration import tasks

    return tasks.prepare(PROJECT, context)


@task
def dvc_stage(stage: str) -> dict:
    from orchestration import tasks

    return tasks.stage(PROJECT, stage)


@task(
    doc_md="""### Gate: champion vs challenger
Scores the model Triton serves now on the test split and compares it with the candidate's evaluate
metrics: every floor in `gate.floors` must be met, and no metric may fall further below the
champion than `gate.max_regression` allows. The first deployment is judged on the floors alone.
The report (decision, reason, metric diff) is this task's XCom and `gate.report` in the workspace.
A rejection **skips** the push with the reason in this log; the champion keeps serving.
No retries: a failing gate fails fast.""",
)
def gate() -> dict:
    from orchestration import tasks

    return tasks.gate(PROJECT, SPEC.evaluate_args(), AF.triton_conn_id)


@task(
    doc_md="""### Push to Triton
Writes the candidate as the next version of the model into the live repository, loads it while
the previous version keeps serving, smoke-tests it with the golden samples, then serves only it;
on any failure the previous version stays. Pushing an identical model creates no new version.
Triton from the Airflow Connection `airflow.triton_conn_id`, else `TRITON_*` / params `serving:`.
Retries with exponential backoff.""",
    **INFRA_RETRIES,
)
def push() -> dict:
    from orchestration import tasks

    return tasks.push(PROJECT, SPEC.evaluate_args(), AF.triton_conn_id)


@task(
    doc_md="""### Publish the version
`dvc push` of the outputs to the DVC remote (`airflow.dvc_remote`), then a commit of `dvc.lock`,
params and code in the workspace repository, tagged `<airflow.tag_prefix><Triton version>`: the
served version maps to a commit and a data version. Skipped when the push created no new version.
Retries with exponential backoff; a retry after a partial try finishes it.""",
    **INFRA_RETRIES,
)
def publish(pushed: dict, **context) -> dict:
    from orchestration import tasks

    prepared = context["ti"].xcom_pull(task_ids="prepare_workspace")
    return tasks.publish_run(PROJECT, pushed, prepared)


with DAG(
    dag_id=AF.dag_id,
    description="Retrain from dvc.yaml (one task per stage), gate against the served champion, push to Triton",
    doc_md=__doc__,
    schedule=schedule(),
    start_date=dt.datetime.fromisoformat(AF.start_date).replace(tzinfo=dt.UTC),
    catchup=AF.catchup,
    max_active_runs=1,
    default_args={"owner": "mlops", "retries": 0},
    tags=["dvc", "triton", "retraining"],
) as retrain:
    prepared = prepare_workspace()

    groups = {group: TaskGroup(group, tooltip=f"dvc.yaml foreach stage {group}") for group in SPEC.graph.groups()}
    stage_tasks = {}
    for spec in SPEC.stage_tasks:
        options = {"queue": AF.gpu_queue, "pool": AF.gpu_pool} if spec.gpu else {}
        stage_tasks[spec.stage.name] = dvc_stage.override(
            task_id=spec.task_id,
            task_group=groups.get(spec.group_id),
            doc_md=spec.doc_md(),
            execution_timeout=dt.timedelta(minutes=AF.stage_timeout_min),
            **options,
        )(stage=spec.stage.name)
    for spec in SPEC.stage_tasks:
        for upstream in spec.upstream:
            stage_tasks[upstream] >> stage_tasks[spec.stage.name]
    prepared >> [stage_tasks[name] for name in SPEC.graph.roots()]

    checked = gate()
    [stage_tasks[name] for name in SPEC.graph.leaves()] >> checked
    if AF.require_approval:
        approval = ApprovalOperator(
            task_id="approve",
            subject="Deploy the retrained {{ ti.xcom_pull(task_ids='gate')['model'] }} model?",
            body="{{ ti.xcom_pull(task_ids='gate')['reason'] }}\n\n{{ ti.xcom_pull(task_ids='gate')['diff_markdown'] }}",
            defaults="Reject",  # no answer within the timeout: the champion keeps serving
            response_timeout=dt.timedelta(hours=AF.approval_timeout_h),
            doc_md="### Human approval\nShows the gate's metric diff; Reject (or no answer in time) skips the push.",
        )
        checked >> approval
        checked = approval
    pushed = push()
    checked >> pushed
    publish(pushed)

"""
### Retrain: `dvc.yaml` as an Airflow DAG

One task per DVC stage, generated from `dvc.yaml` when this file is parsed (foreach items such as
the cross-validation folds become parallel tasks in a group); dependencies follow the stages'
deps and outs. Workers share no disk: **prepare_workspace** pushes the run's commit (sources and
params, on top of the last published `dvc.lock`) to the workspace's git remote; each stage task
checks it out on its own worker, pulls its inputs from the DVC remote, lets DVC decide whether the
stage is up to date, restorable from DVC's run cache or has to run, pushes its outputs and returns
its `dvc.lock` entry.

Then **gate** (the candidate's test metrics against the model Triton serves now, scored live on the
same rows, with the floors and maximum regression of `gate:` in params.yaml), an optional human
**approve**al, **push** to Triton, with `rollout.mode` shadow or canary a **rollout** decided by live
traffic (deferred to the triggerer while it bakes; a person may promote or abort it in its form),
and **publish** (one `dvc.lock` merged from every stage's entry, committed, tagged `model-v<N>` and
`<model>@vN.0.0`, assigned `#prod`, pushed to the git remote). A rejected candidate skips the push,
a rolled-back one the publish, and the champion keeps serving.

Configured by `airflow:` in params.yaml: schedule and data asset (watched when `data.source` is in
S3: new objects start a run), GPU stages, queue and pool, approval, git and DVC remotes, the worker
root, the Triton Connection.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, AssetAny, AssetOrTimeSchedule, CronTriggerTimetable, Param, TaskGroup, task

from orchestration.approval import RunApproval
from orchestration.notify import failure_callback
from orchestration.reports_ui import ReportsLink
from orchestration.rollout_task import RolloutOperator
from orchestration.source_trigger import data_asset
from orchestration.spec import pipeline_spec

PROJECT = Path(os.environ.get("RETRAIN_PROJECT_DIR") or Path(__file__).resolve().parents[1])
SPEC = pipeline_spec(PROJECT)  # reads params.yaml and dvc.yaml: the only I/O at parse time
AF = SPEC.airflow
STAGE_IDS = [t.full_id for t in SPEC.stage_tasks]  # whose results carry the run's dvc.lock entries
TASK_IDS = {t.stage.name: t.full_id for t in SPEC.stage_tasks}
# What Triton serves: each push records version, metrics, data hashes and git tag on the Assets page.
SERVED = Asset(uri=f"triton://{SPEC.params.export.model_name}", group="model")
# A shadow or canary rollout after the push (params rollout.mode); direct: the push serves it, as before.
ROLLOUT = SPEC.params.rollout.mode != "direct"
# A hyper-parameter sweep before train (params sweep.enabled); off: no sweep task in the DAG.
SWEEP = SPEC.params.sweep.enabled

INFRA_RETRIES: dict[str, Any] = {
    "retries": AF.infra_retries,
    "retry_delay": dt.timedelta(seconds=AF.infra_retry_delay_s),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=10),
}


def schedule():
    """The weekly cron, the raw-data asset, the live drift asset, or whichever comes first. With
    data.source in S3 the data asset is watched: the triggerer lists the prefix every
    airflow.source_poll_s seconds, and a changed listing (a new partition, a rewritten object) is an
    event of the asset. With the live sample on, the live drift check (dags/live_drift.py) emits an
    event of `airflow.live_drift.asset` when the live requests drift."""
    assets = []
    if AF.data_asset:
        assets.append(data_asset(AF.data_asset, SPEC.params.data.source, PROJECT, AF.source_poll_s, AF.source_conn_id))
    if SPEC.params.live_drift_on:
        assets.append(Asset(name=AF.live_drift.asset, group="live"))
    asset = None if not assets else assets[0] if len(assets) == 1 else AssetAny(*assets)
    if AF.schedule and asset:
        return AssetOrTimeSchedule(timetable=CronTriggerTimetable(AF.schedule, timezone="UTC"), assets=asset)
    if asset is None:
        return AF.schedule
    return [asset] if isinstance(asset, Asset) else asset


# Each task returns one dict, kept as one XCom. (TaskFlow's default for a `-> dict` task is one XCom
# per key as well: ten more writes per task, read by nobody.)
@task(
    multiple_outputs=False,
    doc_md="""### Prepare the workspace
Checks out the last published version from the workspace's git remote (`airflow.git_remote`),
mirrors the project's sources into it and pushes the result as this run's commit
(`refs/retrain/runs/<run>`): every later task works on exactly that commit. In demo mode it sets
`embed.as_of` to this run's data-interval end, so the run ingests the weekly batches that have
arrived by then. Retries with backoff (an unreachable remote is infrastructure).""",
    **INFRA_RETRIES,
)
def prepare_workspace(**context) -> dict:
    from orchestration import tasks

    return tasks.prepare(PROJECT, context)


@task(multiple_outputs=False, **INFRA_RETRIES)
def dvc_stage(stage: str, ancestors: list[str], **context) -> dict:
    from orchestration import tasks

    return tasks.stage(PROJECT, stage, ancestors, context)


@task(
    task_id="plan",
    doc_md="""### Sweep: plan
Opens the study of this search space and data (`sweep:` in params.yaml; its storage `sweep.storage`)
and returns the trials still to run: a rerun with the same space and data retrains nothing finished.""",
    **INFRA_RETRIES,
)
def sweep_plan(ancestors: list[str], **context) -> list:
    from orchestration import sweep_task

    return sweep_task.plan(PROJECT, ancestors, context)


@task(
    task_id="trial",
    multiple_outputs=False,
    queue=AF.gpu_queue,
    pool=AF.gpu_pool,
    execution_timeout=dt.timedelta(minutes=AF.stage_timeout_min),
    doc_md="""### Sweep: one trial
Trains with the trial's params as a DVC experiment in this worker's checkout (`dvc exp show` in a
clone of the workspace repository lists it), reporting each epoch's DVCLive value to the study.
Failed: this task fails, the sweep goes on. Pruned (behind the other trials at the same epoch): skipped.""",
    **INFRA_RETRIES,
)
def sweep_trial(spec: dict, ancestors: list[str], **context) -> dict:
    from orchestration import sweep_task

    return sweep_task.trial(PROJECT, spec, ancestors, context)


@task(
    task_id="choose",
    multiple_outputs=False,
    trigger_rule="all_done",  # failed and pruned trials do not stop it; it fails when none finished
    doc_md="""### Sweep: choose the winner
The best finished trial's params go into params.yaml of this run's commit (`<run ref>.sweep`): train,
crossval, export, the gate, the push and publish build from them, and `model-vN` records them.
Fails only when no trial finished.""",
    **INFRA_RETRIES,
)
def sweep_choose(**context) -> dict:
    from orchestration import sweep_task

    return sweep_task.choose(PROJECT, context)


@task(
    multiple_outputs=False,
    doc_md="""### Gate: champion vs challenger
Scores the model Triton serves now on the test split and compares it with the candidate's evaluate
metrics: every floor in `gate.floors` must be met, and no metric may fall further below the
champion than `gate.max_regression` allows. The first deployment is judged on the floors alone.
The decision (reason, metric diff, drift summary) is this task's value (XCom), computed in-process by
`stages.gate.run`, and `gate.report` in the task's checkout.
A rejection **skips** the push with the reason in this log; the champion keeps serving.
No retries: a failing gate fails fast.""",
)
def gate(**context) -> dict:
    from orchestration import tasks

    return tasks.gate(PROJECT, SPEC.evaluate_args(), AF.triton_conn_id, STAGE_IDS, context)


@task(
    multiple_outputs=False,
    doc_md="""### Push to Triton
Writes the candidate as the next version of the model into the live repository, loads it while
the previous version keeps serving, smoke-tests it with the golden samples, then serves only it;
on any failure the previous version stays. Pushing an identical model creates no new version.
Triton from the Airflow Connection `airflow.triton_conn_id`, else `TRITON_*` / params `serving:`.
Retries with exponential backoff. Emits an event of the asset `triton://<model>` (version, test
metrics, data hashes, git tag): the Assets page lists what was served and from which run.
With `rollout.mode` shadow or canary it puts the candidate behind the rollout's router instead (the
champion keeps answering); the rollout task decides and emits the event.""",
    outlets=[] if ROLLOUT else [SERVED],
    **INFRA_RETRIES,
)
def push(**context) -> dict:
    from orchestration import tasks

    served = None if ROLLOUT else SERVED
    return tasks.push(PROJECT, SPEC.evaluate_args(), AF.triton_conn_id, STAGE_IDS, context, served=served)


@task(
    multiple_outputs=False,
    doc_md="""### Publish the version
Merges the `dvc.lock` entries every stage task returned (in `dvc.yaml` order) into one lock,
checks that the DVC remote holds every output it names, commits it on top of the run's commit,
tags it `<airflow.tag_prefix><Triton version>` and registers the model the GTO way
(`<model>@vN.0.0`, stage `#<airflow.registry_stage>`), and pushes branch and tags to the git
remote in one atomic push. `git checkout model-v<N> && dvc pull` then gives back what version N
was built from. Skipped when the push created no new version. Retries with exponential backoff;
a retry after a partial try finishes it.""",
    **INFRA_RETRIES,
)
def publish(pushed: dict, prepared: dict, **context) -> dict:
    from orchestration import tasks

    return tasks.publish_run(PROJECT, pushed, prepared, STAGE_IDS, context)


with DAG(
    dag_id=AF.dag_id,
    description="Retrain from dvc.yaml (one task per stage), gate against the served champion, push to Triton",
    doc_md=__doc__,
    schedule=schedule(),
    start_date=dt.datetime.fromisoformat(AF.start_date).replace(tzinfo=dt.UTC),
    catchup=AF.catchup,
    max_active_runs=1,
    # A task that fails for good emails the Connection's recipients; no Connection, no email.
    default_args={"owner": "mlops", "retries": 0, "on_failure_callback": failure_callback(AF.notify_conn_id)},
    tags=["dvc", "triton", "retraining"],
    # The Trigger form. JSON-schema types are checked when the run is created; prepare_workspace
    # checks the values against the project (the data source exists, the params still load).
    params={
        "require_approval": Param(
            AF.require_approval,
            type="boolean",
            title="Require approval",
            description="Ask a person (the approve task) before pushing this run's model to Triton.",
        ),
        "data_source": Param(
            None,
            type=["null", "string"],
            minLength=1,
            title="Data source",
            description="A CSV or Parquet file or folder for this run instead of data.source in params.yaml "
            "(relative to the project, or absolute; every worker must be able to read it), or an "
            "s3://bucket/prefix/ (pinned when the run starts). Empty: data.source.",
        ),
        "as_of": Param(
            None,
            type=["null", "string"],
            title="Data as of",
            description="Demo mode (airflow.demo_batches): the date YYYY-MM-DD whose weekly batches this run "
            "ingests, to replay one. Empty: the run's own date. `make run` sets the newest batch's date.",
        ),
        "note": Param(
            None,
            # nullable, so that the form accepts an empty note (a plain string field is required)
            type=["null", "string"],
            maxLength=500,
            title="Note",
            description="Why this run: logged by prepare_workspace and kept in its result (XCom).",
        ),
    },
) as retrain:
    prepared = prepare_workspace()

    groups = {group: TaskGroup(group, tooltip=f"dvc.yaml foreach stage {group}") for group in SPEC.graph.groups()}
    stage_tasks = {}
    for spec in SPEC.stage_tasks:
        options = {"queue": AF.gpu_queue, "pool": AF.gpu_pool} if spec.gpu else {}
        stage_tasks[spec.stage.name] = dvc_stage.override(
            task_id=spec.task_id,
            task_group=groups.get(spec.group_id) if spec.group_id else None,
            doc_md=spec.doc_md(),
            execution_timeout=dt.timedelta(minutes=AF.stage_timeout_min),
            **options,
        )(stage=spec.stage.name, ancestors=[TASK_IDS[a] for a in sorted(SPEC.graph.ancestors(spec.stage.name))])
    for task_ in [*stage_tasks.values()]:
        task_.operator.operator_extra_links = (ReportsLink(),)  # type: ignore[attr-defined]  # its reports, read from the DVC remote
    for spec in SPEC.stage_tasks:
        for upstream in spec.upstream:
            stage_tasks[upstream] >> stage_tasks[spec.stage.name]
    prepared >> [stage_tasks[name] for name in SPEC.graph.roots()]
    run_commit = prepared  # what publish commits on: with a sweep, the commit with the winner's params
    if SWEEP:
        with TaskGroup("sweep", tooltip="hyper-parameter sweep (params sweep:) before train") as sweep_group:
            inputs = sorted(SPEC.graph.ancestors("train"))
            planned = sweep_plan(ancestors=[TASK_IDS[a] for a in inputs])
            trials = sweep_trial.partial(ancestors=[TASK_IDS[a] for a in inputs]).expand(spec=planned)
            run_commit = sweep_choose()
            trials >> run_commit
        [stage_tasks[a] for a in inputs] >> planned
        # every stage that reads train params waits for the winner's (the rest run meanwhile)
        readers = [s.stage.name for s in SPEC.stage_tasks if s.stage.reads_params("train")]
        run_commit >> [stage_tasks[name] for name in readers]

    checked = gate()
    checked.operator.operator_extra_links = (ReportsLink(),)  # type: ignore[attr-defined]  # a PlainXComArg: .operator is the task
    [stage_tasks[name] for name in SPEC.graph.leaves()] >> checked
    approval = RunApproval(
        task_id="approve",
        subject="Deploy the retrained {{ ti.xcom_pull(task_ids='gate')['model'] }} model?",
        body="{{ ti.xcom_pull(task_ids='gate')['reason'] }}\n\n{{ ti.xcom_pull(task_ids='gate')['diff_markdown'] }}",
        defaults="Reject",  # no answer within the timeout: the champion keeps serving
        response_timeout=dt.timedelta(hours=AF.approval_timeout_h),
        doc_md="### Human approval\nAsked when the run's `require_approval` is on (Trigger form; default "
        "`airflow.require_approval`). Shows the gate's metric diff; Reject (or no answer in time) skips the push. "
        "A run that does not ask approves at once.",
    )
    pushed = push()
    checked >> approval >> pushed
    if ROLLOUT:
        rollout = RolloutOperator(
            task_id="rollout",
            project=PROJECT,
            conn_id=AF.triton_conn_id,
            response_timeout=dt.timedelta(hours=AF.approval_timeout_h),
            outlets=[SERVED],
            doc_md="### Rollout\nThe candidate behind the router (`rollout.mode` shadow or canary) meets live "
            "traffic; the sequential test in the triggerer promotes it or rolls it back (no worker slot is held "
            "meanwhile). **Promote** or **Abort** in this task's form overrides the test at any point. Reports: "
            "the live comparison. Emits the `triton://<model>` event with the outcome; a rollback skips publish.",
        )
        rollout.operator_extra_links = (ReportsLink(),)
        pushed >> rollout
        publish(rollout.output, run_commit)  # type: ignore[arg-type]
    else:
        publish(pushed, run_commit)  # type: ignore[arg-type]  # TaskFlow resolves each XComArg to its dict at run time

"""
### Live drift: the served model's live requests start the retrain

Every `airflow.live_drift.interval_s` seconds, **check** reads the live sample parts (`serving.sample`)
the server wrote since the previous check, profiles those rows and compares them with the
reference of the version Triton serves (the profile of its training data, on the published branch)
by the drift stage's own comparison, `drift.threshold` and `drift.class_threshold`. Its log and
Reports page say why a retrain starts or not; its value (XCom) is the decision.

When the live rows drift, **start_retrain** emits an event of the Asset `airflow.live_drift.asset`, which
the retrain DAG's schedule includes: one retrain run starts. No drift, fewer rows than
`airflow.live_drift.min_rows` or no reference yet: start_retrain is skipped and nothing starts.

Off (no schedule) while `serving.sample.rate` is 0 or `airflow.live_drift.interval_s` is null.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.sdk import DAG, Asset, DeltaDataIntervalTimetable, task

from orchestration.params import load_project_params
from orchestration.reports_ui import ReportsLink

PROJECT = Path(os.environ.get("RETRAIN_PROJECT_DIR") or Path(__file__).resolve().parents[1])
PARAMS = load_project_params(PROJECT / "params.yaml")  # the only I/O at parse time
LIVE = PARAMS.airflow.live_drift
RETRAIN = Asset(name=LIVE.asset, group="live")


@task(multiple_outputs=False, retries=0)
def check(**context) -> dict:
    from orchestration import live_drift_task

    return live_drift_task.check(PROJECT, context)


@task(multiple_outputs=False, outlets=[RETRAIN])
def start_retrain(checked: dict, **context) -> dict:
    from orchestration import live_drift_task

    return live_drift_task.emit(checked, RETRAIN, context)


with DAG(
    dag_id=LIVE.dag_id,
    description="Compare the live sample with the served version's reference; a drift starts the retrain DAG",
    doc_md=__doc__,
    schedule=(
        DeltaDataIntervalTimetable(dt.timedelta(seconds=LIVE.interval_s))
        if PARAMS.live_drift_on and LIVE.interval_s
        else None
    ),
    start_date=dt.datetime.fromisoformat(PARAMS.airflow.start_date).replace(tzinfo=dt.UTC),
    catchup=False,  # a missed check's rows are older than the sample's retention may keep: check from now on
    max_active_runs=1,
    default_args={"owner": "mlops"},
    tags=["live", "drift", "triton"],
):
    checked = check()
    checked.operator.operator_extra_links = (ReportsLink(),)  # type: ignore[attr-defined]  # its report, from the DVC remote
    start_retrain(checked)  # type: ignore[arg-type]  # TaskFlow resolves the XComArg to its dict at run time

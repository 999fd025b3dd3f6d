"""New data in the bucket starts a run by itself, under Airflow's real scheduler and triggerer
(`airflow standalone` on SQLite): a new partition under the watched prefix starts a run that
trains on it; an unchanged prefix starts nothing.

The DAG is a toy with the retrain DAG's own data asset (`orchestration.source_trigger.data_asset`,
what dags/retrain.py schedules on): its one task pins the prefix and fits a small scikit-learn
model on every row the pin names, in seconds. (The whole retrain DAG on the scheduler is
tests/dags/test_data_triggered.py, marked slow.) The bucket is moto's S3 server; the triggerer
and the task reach it through the Connection aws_default only (no AWS_* variables).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import S3_ENV, moto_s3

from devtools.airflow_api import AirflowApi, AirflowApiError
from orchestration.source_trigger import STATE_KEY

pytestmark = [pytest.mark.airflow, pytest.mark.s3, pytest.mark.integration]

BUCKET = "incoming-bucket"
SOURCE = f"s3://{BUCKET}/digits/"
DAG_ID = "toy_source_triggered"
POLL_S = 1.0

TOY_DAG = f'''
"""A toy consumer of the retrain DAG's data asset: pins the source, fits a model on it."""
import datetime as dt
from pathlib import Path

from airflow.sdk import DAG, task

from orchestration.source_trigger import data_asset

with DAG(
    "{DAG_ID}",
    schedule=[data_asset("raw_data", "{SOURCE}", Path(__file__).parent, {POLL_S}, "aws_default")],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
):

    @task(multiple_outputs=False)
    def train() -> dict:
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        from orchestration import pinning
        from pipeline import sources

        with pinning.environment(pinning.source_env("aws_default")):
            pinned = sources.pin("{SOURCE}")
            table = sources.read_source(pinned.objects)  # exactly the pinned objects
        x = table.filter(like="px_").to_numpy(np.float32)
        model = LogisticRegression(max_iter=200).fit(x, table["label"])
        return {{"objects": len(pinned.objects), "rows": len(table), "accuracy": float(model.score(x, table["label"]))}}

    train()
'''


def digits_part(rows: slice) -> bytes:
    from sklearn.datasets import load_digits

    digits = load_digits()
    columns = {f"px_{i}": pa.array(digits.data[rows, i].astype("uint8")) for i in range(64)}
    buffer = io.BytesIO()
    pq.write_table(pa.table({**columns, "label": pa.array(digits.target[rows])}), buffer)
    return buffer.getvalue()


@contextlib.contextmanager
def standalone(dags: Path, endpoint: str, helpers, make_airflow_home, log: Path) -> Iterator[AirflowApi]:
    api_port, log_port, trigger_log_port = helpers.free_ports(3)
    connection = {
        "conn_type": "aws",
        "login": S3_ENV["AWS_ACCESS_KEY_ID"],
        "password": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "extra": {"region_name": S3_ENV["AWS_DEFAULT_REGION"], "endpoint_url": endpoint},
    }
    env = make_airflow_home(
        dags,
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(log_port),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_log_port),
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps(connection),
    )
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}  # the Connection is the only way in
    with helpers.standalone_api(env, log, dags, api_port, DAG_ID) as api:
        yield api


def test_a_new_partition_starts_a_run_that_trains_on_it_and_an_unchanged_prefix_starts_none(
    tmp_path: Path, helpers, make_airflow_home
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "toy_source_triggered.py").write_text(TOY_DAG)
    log = tmp_path / "standalone.log"
    with moto_s3(BUCKET) as endpoint:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            **{k.lower(): v for k, v in S3_ENV.items() if "KEY" in k},
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
        )
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=BUCKET, Key="digits/day=2026-01-05/part-0.parquet", Body=digits_part(slice(0, 150)))
        with standalone(dags, endpoint, helpers, make_airflow_home, log) as api:
            api.set_paused(DAG_ID, False)
            asset = helpers.wait_for("the data asset", lambda: _asset(api), log, poll_s=1)

            def looks() -> int:
                return int((api.asset_state(asset["id"]).get(STATE_KEY) or {}).get("looks", 0))

            helpers.wait_for(
                "the trigger's first look", lambda: looks() >= 2, log, poll_s=1
            )  # the first and an unchanged one
            assert api.runs(DAG_ID) == []  # what was there before starts nothing

            s3.put_object(Bucket=BUCKET, Key="digits/day=2026-01-12/part-0.parquet", Body=digits_part(slice(150, 300)))
            (run,) = helpers.wait_for("a run", lambda: api.runs(DAG_ID), log, poll_s=1)
            assert run["run_type"] == "asset_triggered", run
            finished = api.wait_for_run(DAG_ID, run["dag_run_id"], timeout_s=180, poll_s=1)
            assert finished["state"] == "success", api.task_instances(DAG_ID, run["dag_run_id"])
            trained = api.xcom(DAG_ID, run["dag_run_id"], "train")
            assert trained["objects"] == 2 and trained["rows"] == 300 and trained["accuracy"] > 0.9

            seen = looks()
            helpers.wait_for("three more looks at the unchanged prefix", lambda: looks() >= seen + 3, log, poll_s=1)
            assert [r["dag_run_id"] for r in api.runs(DAG_ID)] == [run["dag_run_id"]]


def _asset(api: AirflowApi) -> dict | None:
    with contextlib.suppress(AirflowApiError):
        return api.asset("raw_data")
    return None

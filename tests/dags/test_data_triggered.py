"""The data-triggered path under the real scheduler: `make airflow`'s Airflow (`airflow standalone`,
LocalExecutor, with the configuration `devtools.airflow_home` generates), a data producer that writes
new raw data and records an event of the `raw_data` asset through the REST API, and the retrain DAG
starting by itself, ingesting that data and serving the model it built (a real local Triton).

Slow (a whole retraining run through the scheduler): the copy trains a few epochs on two folds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import edit_params, local_triton

from devtools.airflow_api import AirflowApi
from devtools.airflow_home import airflow_env, prepare_airflow
from orchestration.params import load_project_params

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.triton, pytest.mark.integration]

DAG_ID = "retrain"
NEW_ROWS = 1200  # of the 1,797 digits: what the producer delivers


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with local_triton(tmp_path_factory.mktemp("triton")) as settings:
        yield settings


@contextlib.contextmanager
def standalone(project: Path, triton, migrated_db: Path, helpers, log: Path) -> Iterator[AirflowApi]:
    """`make airflow` on the copy (without its own Triton: the test's server comes as the Connection)."""
    api_port, log_port, trigger_log_port = helpers.free_ports(3)
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "TRITON_", "RETRAIN_"))}
    connection = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": triton.http_port,
        "extra": {"model_repository": str(triton.repository), "control_key": triton.read_control_key()},
    }
    with pytest.MonkeyPatch.context() as mp:
        for key in set(os.environ) - set(clean_env):
            mp.delenv(key)
        mp.setenv("AIRFLOW__API__PORT", str(api_port))
        env = airflow_env(project)
    env.update(
        {
            "AIRFLOW_CONN_TRITON_DEFAULT": json.dumps(connection),
            # other Airflows on this machine may hold the default log-server ports
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_port),
        }
    )
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_db, home / "airflow.db")  # migrated once per session; migrate is then a no-op
    prepare_airflow(env, load_project_params(project / "params.yaml").airflow)
    with helpers.standalone_api(env, log, project, api_port, DAG_ID) as api:
        yield api


def test_new_raw_data_triggers_a_run_that_ingests_it(
    tmp_path: Path, triton, migrated_db: Path, helpers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from sklearn.datasets import load_digits

    project = helpers.copy_project(tmp_path_factory.mktemp("triggered-project"))
    edit_params(
        project,
        data__source="incoming/digits.csv",
        split__folds=[0, 1],
        train__epochs=4,
        gate__floors={"accuracy": 0.5, "f1_macro": 0.5},
        airflow__schedule=None,  # only the asset starts runs: nothing else can explain a run
        airflow__demo_batches=False,
    )
    with standalone(project, triton, migrated_db, helpers, tmp_path / "standalone.log") as api:
        api.set_paused(DAG_ID, False)
        raw_data = api.asset("raw_data")

        # the producer: new data where data.source points, then an event of the asset
        digits = load_digits()
        rows = np.column_stack([digits.target, digits.data]).astype(int)[:NEW_ROWS]
        (project / "incoming").mkdir()
        header = ",".join(["label", *(f"px_{i}" for i in range(64))])
        np.savetxt(project / "incoming" / "digits.csv", rows, fmt="%d", delimiter=",", header=header, comments="")
        api.create_asset_event(raw_data["id"], {"rows": NEW_ROWS, "producer": "test"})

        deadline = time.monotonic() + 180
        while not (runs := api.runs(DAG_ID)):
            assert time.monotonic() < deadline, f"no run started:\n{(tmp_path / 'standalone.log').read_text()[-4000:]}"
            time.sleep(2)
        (run,) = runs
        assert run["run_type"] == "asset_triggered", run
        finished = api.wait_for_run(DAG_ID, run["dag_run_id"], timeout_s=1800)
        states = {t["task_id"]: t["state"] for t in api.task_instances(DAG_ID, run["dag_run_id"])}
        assert finished["state"] == "success", states

        # the run ingested the producer's rows: clean's checkout of the run's commit counted them
        clean = api.xcom(DAG_ID, run["dag_run_id"], "clean")
        assert clean["outcome"] == "ran"
        counted = json.loads((Path(clean["workspace"]) / "metrics" / "clean.json").read_text())
        assert counted["rows_in"] == NEW_ROWS
        # ...and the model built from them serves: the served-model asset says so
        served = api.asset_events(api.asset("triton://digits")["id"])
        assert [e["extra"]["version"] for e in served] == [1]
        assert served[0]["source_run_id"] == run["dag_run_id"]

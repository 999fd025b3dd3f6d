"""The rollout task under Airflow's real scheduler and triggerer (`airflow standalone` on SQLite),
against a real Triton with a client thread sending requests: the task defers (no worker slot held),
the triggerer's RolloutTrigger reads Triton's metrics and fires when the canary's first step
passes, the task resumes on a worker, moves to the next step and defers again; a person then
answers the task's human-in-the-loop form with Abort, which resumes it at once and overrides the
test: the candidate is rolled back, the outcome is the task's value and the served-model asset
event's extra, and the Reports page showed the live comparison while it ran.

The DAG is a toy: a `push` task that runs what the retrain DAG's push runs in rollout mode
(orchestration/rollout_start.py, with the test's rollout params), and the retrain DAG's
RolloutOperator. Triton is reached through the Connection triton_default only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving_traffic import Traffic
from support import ROOT, local_triton

from devtools.airflow_api import AirflowApi
from devtools.toy import build_candidate
from serving import loading
from serving.client import ClientSettings, TritonClient
from serving.push import push_candidate
from serving.repository import TritonRepository
from serving.rollout.params import LatencyParams, RolloutParams
from serving.rollout.state import load_state
from serving.settings import ServingSettings

pytestmark = [pytest.mark.airflow, pytest.mark.triton, pytest.mark.integration]

DAG_ID = "toy_rollout"
MODEL = "r_airflow"

TOY_DAG = f'''
"""A toy: the retrain DAG's push in rollout mode, then its rollout task."""
import datetime as dt
import json
from pathlib import Path

from airflow.sdk import DAG, Asset, task

from orchestration.rollout_task import RolloutOperator

with DAG("{DAG_ID}", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False):

    @task
    def push() -> dict:
        # What the retrain DAG's push runs in rollout mode (orchestration/tasks.py), with the
        # test's rollout params in place of params.yaml's (direct) and Triton from the Connection.
        from types import SimpleNamespace

        from orchestration import tasks
        from orchestration.rollout_start import start
        from serving.rollout.params import RolloutParams

        given = json.loads((Path(__file__).parent / "push.json").read_text())
        settings = tasks.serving_settings("{ROOT}", "triton_default", tasks.project_params("{ROOT}"))
        params = SimpleNamespace(rollout=RolloutParams.model_validate(given["rollout"]))
        return start(Path(given["root"]), "candidate", "metrics.json", settings, params).to_xcom()

    push() >> RolloutOperator(
        task_id="rollout",
        project="{ROOT}",
        conn_id="triton_default",
        outlets=[Asset(uri="triton://{MODEL}", group="model")],
    )
'''


@contextlib.contextmanager
def standalone(dags: Path, connection: dict, helpers, make_airflow_home, log: Path) -> Iterator[AirflowApi]:
    api_port, log_port, trigger_log_port = helpers.free_ports(3)
    env = make_airflow_home(
        dags,
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(log_port),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_log_port),
        AIRFLOW_CONN_TRITON_DEFAULT=json.dumps(connection),
    )
    with helpers.standalone_api(env, log, dags, api_port, DAG_ID) as api:
        yield api


def test_the_rollout_task_defers_resumes_on_the_test_and_a_person_overrides_it(
    tmp_path: Path, helpers, make_airflow_home
) -> None:
    with local_triton(tmp_path / "triton") as server:
        client = ClientSettings.local(server, timeout_s=30.0)
        settings = ServingSettings(client=client, repository=server.repository, load_timeout_s=60.0)
        champion = build_candidate(tmp_path / "champion", name=MODEL, seed=11)
        candidate = build_candidate(tmp_path / "candidate", name=MODEL, seed=11, retrained=5)
        push_candidate(champion, settings)
        dags = tmp_path / "dags"
        dags.mkdir()
        (dags / "toy_rollout.py").write_text(TOY_DAG)
        connection = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": server.http_port,
            "extra": {
                "control_key": server.read_control_key(),
                "model_repository": str(server.repository),
                "metrics_url": server.metrics_url,
            },
        }
        log = tmp_path / "standalone.log"
        repo = TritonRepository(server.repository)
        rows = np.random.default_rng(0).uniform(0, 16, (256, 64)).astype(np.float32)
        with standalone(dags, connection, helpers, make_airflow_home, log) as api:
            # The push: the candidate behind the router, canary in two steps (polled every second).
            params = RolloutParams(
                mode="canary", canary_steps=[30.0, 60.0], poll_s=1.0, min_requests=50, latency=LatencyParams(margin=1.0)
            )
            traffic = Traffic(client, MODEL, {"champion": champion, "candidate": candidate}, rows=rows)
            (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.99}))
            (dags / "push.json").write_text(json.dumps({"root": str(tmp_path), "rollout": params.model_dump()}))
            with traffic:
                api.set_paused(DAG_ID, False)
                run_id = api.trigger(DAG_ID, "rollout-1", None)["dag_run_id"]

                def rollout_state() -> str | None:
                    state = {t["task_id"]: t["state"] for t in api.task_instances(DAG_ID, run_id)}.get("rollout")
                    assert state not in ("failed", "upstream_failed"), log.read_text()[-6000:]
                    return state

                helpers.wait_for("the task deferred", lambda: rollout_state() == "deferred", log)
                pushed = api.xcom(DAG_ID, run_id, "push")
                assert (pushed["version"], pushed["serving"], pushed["rollout"]["status"]) == (2, 1, "running"), pushed
                # The triggerer decides step 1 passed; the task resumes, moves on, and defers again.
                helpers.wait_for("the second step", lambda: load_state(repo, MODEL).step == 1, log)
                helpers.wait_for("deferred again", lambda: rollout_state() == "deferred", log)
                page = api.get_page(f"/retrain-reports/{DAG_ID}/{run_id}/rollout")
            assert traffic.failures == [] and traffic.answers["unknown"] == 0
            assert "Sequential test" in page and "step 2 of 2" in page and "<svg" in page  # the live comparison

            # With no more traffic the second step cannot decide: a person aborts in the form, once the
            # scheduler has taken in that the deferred worker exited (an answer before that races
            # Airflow's own bookkeeping: it takes the late exit for the resumed task's and fails it).
            exited = f"TaskInstance Finished: dag_id={DAG_ID}, task_id=rollout,"
            helpers.wait_for("the worker's exit seen", lambda: log.read_text().count(exited) >= 2, log)
            api.respond(DAG_ID, run_id, "rollout", ["Abort"])
            finished = api.wait_for_run(DAG_ID, run_id, timeout_s=180, poll_s=1)
            assert finished["state"] == "success", api.task_instances(DAG_ID, run_id)
            outcome = api.xcom(DAG_ID, run_id, "rollout")["rollout"]
            assert (outcome["status"], outcome["decided_by"]) == ("rolled back", "person"), outcome
            events = api.asset_events(api.asset(f"triton://{MODEL}")["id"])
            assert [e["extra"]["rollout"]["status"] for e in events] == ["rolled back"]
            assert events[0]["extra"]["version"] == 1  # what serves
            tries = api.tries(DAG_ID, run_id, "rollout")
            print(f"\n  {traffic.summary()}; the task's tries: {[(t['try_number'], t['state']) for t in tries]}")
        with TritonClient(client) as triton:
            assert loading.served_versions(triton, MODEL) == [1]
        final = load_state(repo, MODEL)
        assert final is not None and [e["event"] for e in final.events][-3:] == ["running", "step", "rolled back"]

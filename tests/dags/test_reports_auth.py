"""The reports pages ask Airflow's own auth manager, on the real api-server: with users (the simple
auth manager, all-admins off, multi-team), no token is 401, a user of another team is 403 (as
Airflow's REST API answers for the same DAG), the DAG's team member gets the report. The local
`make airflow` setup (all admins, loopback) still shows it without a login.

The run is a two-line DAG whose task returns a gate-shaped result, so that what is checked is who
gets the page, not the pipeline (the browser test in test_report_links.py logs in to a real run's).
"""

from __future__ import annotations

import textwrap
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from orchestration.reports_ui import URL_PREFIX, create_app

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

DAG_ID = "reports_auth"
DAG = f'''
import pendulum
from airflow.sdk import dag, task

@dag(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def reports_auth():
    @task(multiple_outputs=False)
    def gate() -> dict:
        return {{"passed": False, "reason": "accuracy fell 0.05 below the champion", "diff_markdown": "| accuracy |"}}

    gate()

reports_auth()
'''


def _get(url: str, token: str | None = None, accept: str = "application/json") -> tuple[int, str]:
    headers = {"Accept": accept} | ({"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _routes(run_id: str) -> list[str]:
    """Every GET route of the reports app, its path parameters filled in for the run's gate task."""
    values = {"dag_id": DAG_ID, "run_id": urllib.parse.quote(run_id, safe=""), "task_id": "gate"}
    paths = [route.path for route in create_app(Path(".")).routes if "GET" in getattr(route, "methods", ())]
    assert paths, "the reports app has no routes"
    return [URL_PREFIX + path.format(**values) for path in paths]


def test_every_route_needs_a_user_allowed_on_the_dag(make_airflow_home, helpers, tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(textwrap.dedent(DAG))
    plugins = {"AIRFLOW__CORE__PLUGINS_FOLDER": str(Path(__file__).resolve().parents[2] / "plugins")}
    env = helpers.team_auth(make_airflow_home(dags, **plugins))
    run_id, output, states = helpers.dags_test(env, tmp_path, "2026-01-01", dag_id=DAG_ID, timeout=300)
    assert states == {"gate": "success"}, output[-3000:]

    (port,) = helpers.free_ports(1)
    base = f"http://127.0.0.1:{port}"
    with helpers.api_server(env, port, tmp_path / "api-server.log") as api:
        tokens = {user: api.login(user, f"{user}-password") for user in helpers.users}
        # what Airflow's own API answers for the DAG, the yardstick
        assert _get(f"{base}/api/v2/dags/{DAG_ID}")[0] == 401
        assert _get(f"{base}/api/v2/dags/{DAG_ID}", tokens["mallory"])[0] == 403
        assert _get(f"{base}/api/v2/dags/{DAG_ID}", tokens["alice"])[0] == 200
        for route in _routes(run_id):
            status, body = _get(base + route)
            assert status == 401 and "accuracy fell" not in body, (route, status, body[:300])
            assert _get(base + route, "not-a-token")[0] in (401, 403), route
            status, body = _get(base + route, tokens["mallory"])
            assert status == 403 and "accuracy fell" not in body, (route, status, body[:300])
            status, body = _get(base + route, tokens["alice"])
            assert status == 200 and "accuracy fell 0.05 below the champion" in body, (route, status, body[:300])
        # a browser without a login is told where to log in, and comes back to the page afterwards
        status, body = _get(base + _routes(run_id)[0], accept="text/html")
        assert status == 401 and "/auth/login?next=" in body and "accuracy fell" not in body, body[:500]
        # the app's own OpenAPI pages are not served either
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert _get(f"{base}{URL_PREFIX}{path}")[0] in (401, 404), path

    # `make airflow`: one person, all admins, loopback only: the page needs no login there
    local = {**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    with helpers.api_server(local, port, tmp_path / "api-server-local.log"):
        status, body = _get(base + _routes(run_id)[0])
        assert status == 200 and "accuracy fell 0.05 below the champion" in body, body[:300]

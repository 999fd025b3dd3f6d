"""The web UI: Airflow's API server on the project's DAG folder, opened in headless Chromium as a
person would: the DAG's graph with every node rendered, the Trigger form with the run's fields, and
the Assets page with the served model. A screenshot of each is kept as a test artifact.

Chromium is driven with Selenium through the Debian chromedriver, waiting with `WebDriverWait`
for what the page must show. Needs the Debian packages `chromium` and `chromium-driver`; without them the test is
skipped and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from browser import chromium, screenshot, skip_without_chromium
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from support import started

from orchestration.spec import pipeline_spec

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1
        return json.loads(response.read())


def _wait_for(url: str, seconds: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[:2]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            _get(url, timeout=2)
            return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds:.0f}s:\n{log.read_text()[-3000:]}")


def rendered_nodes(browser: webdriver.Chrome) -> set[str]:
    """The first line of every node's label in the React Flow graph."""
    return {
        node.text.split("\n")[0].strip()
        for node in browser.find_elements(By.CSS_SELECTOR, ".react-flow__node")
        if node.text.strip()
    }


@pytest.fixture(scope="module")
def ui(make_airflow_home, helpers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an API server (REST API and web UI) on the project's DAG folder."""
    skip_without_chromium()
    env = make_airflow_home(ROOT / "dags")
    helpers.airflow(env, "dags", "reserialize")
    (api_port,) = helpers.free_ports(1)
    api = f"http://127.0.0.1:{api_port}"
    log = tmp_path_factory.mktemp("api-server") / "api-server.log"
    with started(
        [str(Path(env["PATH"].split(os.pathsep)[0]) / "airflow"), "api-server", "--port", str(api_port)], env, log
    ) as server:
        _wait_for(f"{api}/api/v2/monitor/health", 120, server, log)
        yield api


def _wait_for_text(browser: webdriver.Chrome, texts: Collection[str], seconds: float = 60) -> str:
    """The page's text once it shows every one of `texts` (or after `seconds`; the caller asserts)."""
    body = ""

    def shows_all(driver: webdriver.Chrome) -> bool:
        nonlocal body
        with contextlib.suppress(StaleElementReferenceException):
            body = driver.find_element(By.TAG_NAME, "body").text
        return all(text in body for text in texts)

    with contextlib.suppress(TimeoutException):
        WebDriverWait(browser, seconds, poll_frequency=0.5).until(shows_all)
    return body


def test_dag_graph_renders_in_the_web_ui(ui: str, tmp_path: Path) -> None:
    spec = pipeline_spec(ROOT)
    groups = set(spec.graph.groups())
    expected_nodes = {
        "prepare_workspace",
        *(t.full_id for t in spec.stage_tasks if t.group_id is None),
        *groups,
        "gate",
        "push",
        "publish",
    }
    # The REST API sees the DAG, its description and every task.
    dag = _get(f"{ui}/api/v2/dags/{spec.airflow.dag_id}")
    assert "dvc.yaml" in dag["description"]
    tasks = {t["task_id"] for t in _get(f"{ui}/api/v2/dags/{spec.airflow.dag_id}/tasks")["tasks"]}
    assert tasks >= {t.full_id for t in spec.stage_tasks} | {"prepare_workspace", "gate", "push", "publish"}

    with chromium(Path(tempfile.mkdtemp(dir=tmp_path, prefix="chromium-"))) as browser:
        page = f"{ui}/dags/{spec.airflow.dag_id}"
        browser.get(page)
        # The UI remembers the grid/graph choice in localStorage; ask for the graph.
        browser.execute_script("localStorage.setItem('default_dag_view', JSON.stringify('graph'));")
        browser.get(page)
        labels: set[str] = set()

        def every_node_rendered(driver: webdriver.Chrome) -> bool:
            nonlocal labels
            with contextlib.suppress(StaleElementReferenceException):  # React re-renders nodes
                labels = rendered_nodes(driver)
            return expected_nodes <= labels

        with contextlib.suppress(TimeoutException):  # the assertion below says what was missing
            WebDriverWait(browser, 60, poll_frequency=0.5).until(every_node_rendered)
        # The picture once React Flow has finished laying out: the same node positions twice running.
        previous: list[dict] = []

        def layout_settled(driver: webdriver.Chrome) -> bool:
            nonlocal previous
            with contextlib.suppress(StaleElementReferenceException):
                now = [node.location for node in driver.find_elements(By.CSS_SELECTOR, ".react-flow__node")]
                settled, previous = bool(now) and now == previous, now
                return settled
            return False

        with contextlib.suppress(TimeoutException):
            WebDriverWait(browser, 10, poll_frequency=0.5).until(layout_settled)
        shot = screenshot(browser, "retrain-graph.png")
    assert expected_nodes <= labels, f"graph nodes rendered: {labels}; screenshot {shot}"
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_trigger_form_shows_the_runs_fields(ui: str, tmp_path: Path) -> None:
    """Trigger on the DAG's page opens Airflow's form with the fields the DAG declares (Param titles
    and descriptions from dags/retrain.py), not a raw JSON box."""
    dag_id = pipeline_spec(ROOT).airflow.dag_id
    with chromium(tmp_path / "chromium", window="1400,1200") as browser:
        browser.get(f"{ui}/dags/{dag_id}")
        _wait_for_text(browser, ["Trigger"])
        button = WebDriverWait(browser, 30).until(
            lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Trigger"), None)
        )
        button.click()
        fields = ["Require approval", "Data source", "Data as of", "Note", "Ask a person (the approve task)"]
        text = _wait_for_text(browser, ["Trigger Dag", *fields])
        shot = screenshot(browser, "trigger-form.png")
        # With every field at its default the form is valid: its own Trigger button (the dialog's,
        # not the page's) can be pressed without typing anything.
        buttons = [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Trigger"]
        submit = [b.is_enabled() for b in buttons[1:]]  # the first is the page's, which opened the dialog
    missing = [field for field in fields if field not in text]
    assert not missing, f"the Trigger form lacks {missing}; it shows:\n{text[:1500]}\nscreenshot {shot}"
    assert submit == [True], f"the form's Trigger button is disabled; screenshot {shot}"


def test_the_assets_page_lists_the_served_model(ui: str, tmp_path: Path) -> None:
    """The push's outlet, the Asset `triton://<model>`, is on the Assets page, named after the model
    Triton serves (each push adds an event carrying version, metrics and tag: see test_retrain_e2e)."""
    spec = pipeline_spec(ROOT)
    uri = f"triton://{spec.params.export.model_name}"
    with chromium(tmp_path / "chromium", window="1400,900") as browser:
        browser.get(f"{ui}/assets")
        text = _wait_for_text(browser, [uri])
        shot = screenshot(browser, "assets-page.png")
    assert uri in text, f"the Assets page does not list {uri}; it shows:\n{text[:1500]}\nscreenshot {shot}"
    # its row: the group "model" and one producing task (the push)
    row = text.split(uri, 1)[1].split("\nCopy", 1)[0]
    assert "model" in row and "1 Task" in row, row

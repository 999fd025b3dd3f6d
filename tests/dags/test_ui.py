"""The web UI: Airflow's API server on the project's DAG folder, the DAG's graph opened in headless
Chromium, every node rendered, and a screenshot kept as a test artifact.

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


def test_dag_graph_renders_in_the_web_ui(make_airflow_home, helpers, tmp_path: Path) -> None:
    skip_without_chromium()
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

    env = make_airflow_home(ROOT / "dags")
    helpers.airflow(env, "dags", "reserialize")
    (api_port,) = helpers.free_ports(1)
    api = f"http://127.0.0.1:{api_port}"
    with started(
        [str(Path(env["PATH"].split(os.pathsep)[0]) / "airflow"), "api-server", "--port", str(api_port)],
        env,
        tmp_path / "api-server.log",
    ) as server:
        _wait_for(f"{api}/api/v2/monitor/health", 120, server, tmp_path / "api-server.log")

        # The REST API sees the DAG, its description and every task.
        dag = _get(f"{api}/api/v2/dags/{spec.airflow.dag_id}")
        assert "dvc.yaml" in dag["description"]
        tasks = {t["task_id"] for t in _get(f"{api}/api/v2/dags/{spec.airflow.dag_id}/tasks")["tasks"]}
        assert tasks >= {t.full_id for t in spec.stage_tasks} | {"prepare_workspace", "gate", "push", "publish"}

        with chromium(Path(tempfile.mkdtemp(dir=tmp_path, prefix="chromium-"))) as browser:
            page = f"{api}/dags/{spec.airflow.dag_id}"
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

"""The web UI: Airflow's API server on the project's DAG folder, the DAG's graph opened in headless
Chromium, every node rendered, and a screenshot kept as a test artifact.

Chromium is driven through chromedriver's W3C WebDriver HTTP API with urllib (no extra Python
package). Needs the Debian packages `chromium` and `chromium-driver`; without them the test is
skipped and says so.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.spec import pipeline_spec

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / ".airflow" / "test-artifacts")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1600,1000",
]


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


@contextlib.contextmanager
def started(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A background process in its own session, stopped by its PID (and its group) at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class WebDriver:
    """The few W3C WebDriver calls this test needs."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.session = ""

    def call(self, method: str, path: str, body: dict | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - 127.0.0.1
            return json.loads(response.read())["value"]

    def open(self, profile: str) -> None:
        options = {"binary": shutil.which("chromium"), "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def go(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def js(self, script: str) -> object:
        return self.call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("GET", f"/session/{self.session}/screenshot"))

    def close(self) -> None:
        if self.session:
            self.call("DELETE", f"/session/{self.session}")


def test_dag_graph_renders_in_the_web_ui(make_airflow_home, helpers, tmp_path: Path) -> None:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        pytest.skip(
            f"headless Chromium unavailable ({', '.join(missing)} not found): "
            "install the Debian packages with `apt-get install -y chromium chromium-driver`"
        )
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
    api_port, driver_port = helpers.free_ports(2)
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

        with started(["chromedriver", f"--port={driver_port}"], env, tmp_path / "chromedriver.log") as driver_proc:
            _wait_for(f"http://127.0.0.1:{driver_port}/status", 30, driver_proc, tmp_path / "chromedriver.log")
            browser = WebDriver(driver_port)
            browser.open(tempfile.mkdtemp(dir=tmp_path, prefix="chromium-"))
            try:
                page = f"{api}/dags/{spec.airflow.dag_id}"
                browser.go(page)
                # The UI remembers the grid/graph choice in localStorage; ask for the graph.
                browser.js("localStorage.setItem('default_dag_view', JSON.stringify('graph'));")
                browser.go(page)
                labels: list[str] = []
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    labels = browser.js(
                        "return Array.from(document.querySelectorAll('.react-flow__node'))"
                        ".map(n => n.innerText.split('\\n')[0].trim())"
                    )
                    if expected_nodes <= set(labels):
                        break
                    time.sleep(0.5)
                time.sleep(1.0)  # let the layout settle before the picture
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                shot = ARTIFACTS / "retrain-graph.png"
                shot.write_bytes(browser.screenshot())
            finally:
                browser.close()
    assert expected_nodes <= set(labels), f"graph nodes rendered: {labels}; screenshot {shot}"
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""Reports one click from the task: the "Reports" extra link of a stage task opens, in headless
Chromium, that task's report as the api-server's plugin page reads it from the DVC remote (never
from a worker's disk), for a person who logs in to an Airflow set up for a team (users, no
all-admins). The screenshot is kept as a test artifact.

The run is the real DAG through `airflow dags test`, with the stages after clean marked successful
without running (what is checked is the link and the page, not training).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from browser import chromium, screenshot, skip_without_chromium
from selenium.webdriver.support.ui import WebDriverWait
from support import edit_params

from orchestration.reports_ui import RemoteReader, render, report_outputs

DAG_ID = "retrain"
AFTER_CLEAN = r"^(split|train|crossval|export|evaluate|gate|approve|push|publish)"


def _store(remote: Path, data: bytes, suffix: str = "") -> str:
    """`data` where DVC 3 puts it in a remote (a directory's listing keeps its `.dir` suffix)."""
    md5 = hashlib.md5(data).hexdigest() + suffix  # noqa: S324 - DVC's content address
    path = remote / "files" / "md5" / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return md5


def test_the_page_reads_report_outputs_from_the_remote_by_md5(project_copy: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    edit_params(project_copy, airflow__dvc_remote=str(remote))
    report = _store(remote, b"<html><title>Data validation report</title></html>")
    curve = _store(remote, b"step\tloss\n0\t1.5\n")
    listing = json.dumps([{"relpath": "plots/metrics/loss.tsv", "md5": curve}, {"relpath": "x.bin", "md5": curve}])
    directory = _store(remote, listing.encode(), ".dir")
    result = {
        "stage": "clean",
        "lock": {
            "clean": {
                "outs": [
                    {"path": "data/clean.parquet", "md5": "0" * 32},  # data: not a report
                    {"path": "reports/clean.html", "md5": report},
                    {"path": "dvclive/train", "md5": directory},
                ]
            }
        },
    }
    outs = report_outputs(result)
    assert [o["path"] for o in outs] == ["reports/clean.html", "dvclive/train"]
    reader = RemoteReader(project_copy)
    assert reader.files(outs[0]) == [("reports/clean.html", b"<html><title>Data validation report</title></html>")]
    assert reader.files(outs[1]) == [("dvclive/train/plots/metrics/loss.tsv", b"step\tloss\n0\t1.5\n")]
    # one HTML report is served as it is; anything else as text under its path
    assert render("clean", "r1", reader.files(outs[0]), None).startswith("<html>")
    page = render("train", "r1", reader.files(outs[1]), None)
    assert "dvclive/train/plots/metrics/loss.tsv" in page and "1.5" in page
    # a DVCLive curve is drawn, not listed
    curves = render(
        "train", "r1", [("dvclive/train/plots/metrics/loss.tsv", b"step\tloss\n0\t1.5\n1\t0.5\n2\t0.25\n")], None
    )
    assert curves.count("<polyline") == 1 and "loss: 1.5 at step 0 to 0.25 at step 2" in curves
    assert "<pre>" not in curves
    gate = render("gate", "r1", [], {"passed": False, "reason": "accuracy fell 0.05", "diff_markdown": "| a |"})
    assert "decision: rejected" in gate and "accuracy fell 0.05" in gate


@pytest.mark.airflow
@pytest.mark.integration
def test_clean_links_to_its_validation_report(project_copy: Path, make_airflow_home, helpers, tmp_path: Path) -> None:
    skip_without_chromium()
    (port,) = helpers.free_ports(1)
    env = make_airflow_home(
        project_copy / "dags",
        AIRFLOW__CORE__PLUGINS_FOLDER=str(project_copy / "plugins"),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API__HOST="127.0.0.1",
    )
    env = helpers.team_auth(env)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "test", DAG_ID, "2026-01-26"]
        + ["--mark-success-pattern", AFTER_CLEAN],
        env=env,
        cwd=project_copy,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = result.stdout + result.stderr
    run_id = re.findall(r"DagRun Finished: dag_id=retrain, .*?run_id=([^,]+),", output)
    assert run_id, output[-5000:]
    # the worker's checkouts are gone: the page can only read the DVC remote
    shutil.rmtree(project_copy / ".airflow" / "worker")

    with helpers.api_server(env, port, tmp_path / "api-server.log") as api:
        api.login("alice", "alice-password")
        q = urllib.parse.quote
        links = api._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{q(run_id[-1], safe='')}/taskInstances/clean/links")
        link = links["extra_links"]["Reports"]
        assert link.startswith(f"http://127.0.0.1:{port}/retrain-reports/retrain/")
        request = urllib.request.Request(link, headers={"Authorization": f"Bearer {api.token}"})
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - 127.0.0.1
            assert response.status == 200 and b"Data validation report" in response.read()

        with chromium(tmp_path / "chromium", window="1400,1000") as browser:
            # not logged in: the page says so and links to Airflow's login, which brings the person back
            browser.get(link)
            assert "Data validation report" not in browser.page_source
            browser.find_element("link text", "Log in to Airflow").click()
            WebDriverWait(browser, 60).until(lambda b: b.find_elements("name", "username"))
            browser.find_element("name", "username").send_keys("alice")
            browser.find_element("name", "password").send_keys("alice-password")
            browser.find_element("css selector", "button[type=submit]").click()

            def path(url: str) -> str:
                return urllib.parse.unquote(urllib.parse.urlparse(url).path)

            WebDriverWait(browser, 60).until(lambda b: path(b.current_url) == path(link) and b.title)
            title = browser.title
            text = browser.find_element("tag name", "body").text
            shot = screenshot(browser, "clean-report-link.png")
    assert title == "Data validation report", text[:500]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

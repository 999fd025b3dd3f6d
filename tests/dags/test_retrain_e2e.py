"""The retraining DAG end to end with `airflow dags test`, on the embedded data, against a real local
Triton (started on free ports, stopped by its PID). `dags test` runs the tasks one by one on one
machine: the fleet's code path with one worker root (each task in a checkout of its own, outputs
through the DVC remote, lock entries through XCom).

One copy of the project goes through four runs, in order:
1. first run: every stage runs, the gate passes on the floors alone, version 1 serves, published
   (tag model-v1, registered as digits@v1.0.0 in #prod);
2. same data again: no stage reruns, nothing is pushed or tagged;
3. a worse candidate (forced by params): the gate rejects it, version 1 keeps serving;
4. corrupted raw data: clean fails, nothing downstream runs, nothing is pushed.

To keep it quick on two cores the copy trains for a few epochs on two folds, with floors to match.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import edit_params, local_triton

from orchestration.workspace import dvc_command

pytestmark = [pytest.mark.airflow, pytest.mark.triton, pytest.mark.integration]

DAG_ID = "retrain"
RUN_DATE = "2026-01-26"  # demo mode: the batches of 01-05 .. 01-26 (4 of 6)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with local_triton(tmp_path_factory.mktemp("triton")) as settings:
        yield settings


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, helpers) -> Path:
    project = helpers.copy_project(tmp_path_factory.mktemp("retrain-project"))
    edit_params(
        project,
        split__folds=[0, 1],
        train__epochs=6,
        explain__enabled=True,  # its Reports page must show the attribution maps
        gate__floors={"accuracy": 0.85, "f1_macro": 0.85},
        gate__max_regression={"accuracy": 0.02, "f1_macro": 0.02},
    )
    return project


@pytest.fixture(scope="module")
def ui_port(helpers) -> int:
    return helpers.free_ports(1)[0]


@pytest.fixture(scope="module")
def env(make_airflow_home, project: Path, triton, ui_port: int) -> dict[str, str]:
    connection = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": triton.http_port,
        # the local server restricts model control to its key; a Connection carries it as an extra
        "extra": {"model_repository": str(triton.repository), "control_key": triton.read_control_key()},
    }
    return make_airflow_home(
        project / "dags",
        AIRFLOW_CONN_TRITON_DEFAULT=json.dumps(connection),
        # the Reports pages (the project's plugin) on the api-server a test starts on this port
        AIRFLOW__CORE__PLUGINS_FOLDER=str(project / "plugins"),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{ui_port}",
        AIRFLOW__API__HOST="127.0.0.1",
    )


class Run:
    def __init__(self, run_id: str, output: str, states: dict[str, str]):
        self.run_id = run_id
        self.output = output
        self.states = states

    def log_lines(self, pattern: str) -> list[str]:
        return re.findall(pattern, self.output)


def run_dag(env: dict[str, str], project: Path, helpers, date: str = RUN_DATE) -> Run:
    return Run(*helpers.dags_test_run(env, project, date))


def served(triton, model: str = "digits") -> tuple[list[int], list[int]]:
    """(stored versions, READY versions) of the model on the test server."""
    from serving.client import ClientSettings, TritonClient
    from serving.repository import TritonRepository

    with TritonClient(ClientSettings.local(triton, retries=1)) as client:
        ready = sorted(
            int(m["version"]) for m in client.repository_index() if m.get("name") == model and m.get("state") == "READY"
        )
    return TritonRepository(triton.repository).versions(model), ready


def git_remote(project: Path) -> Path:
    return project / ".airflow" / "workspace.git"


def tags(project: Path) -> list[str]:
    return subprocess.run(
        ["git", "--git-dir", str(git_remote(project)), "tag"], capture_output=True, text=True, check=True
    ).stdout.split()


PUBLISHED_V1 = ["digits#prod#1", "digits@v1.0.0", "model-v1"]  # `git tag` order


@pytest.fixture(scope="module")
def first(env, project: Path, helpers) -> Run:
    return run_dag(env, project, helpers)


def stage_names(project: Path) -> set[str]:
    from orchestration.dvc_graph import read_graph

    return set(read_graph(project).stages)


def test_first_run_deploys_version_1(first: Run, project: Path, triton, tmp_path: Path) -> None:
    assert set(first.states.values()) == {"success"}, first.states
    assert set(first.log_lines(r"stage (\S+) ran in")) == stage_names(project)
    assert len(set(first.log_lines(r"workspace: (\S+)"))) >= len(stage_names(project)), "a checkout per task"
    assert "passed: first deployment" in first.output
    assert served(triton) == ([1], [1])
    assert tags(project) == PUBLISHED_V1
    # the DVC remote got the outputs; the tag holds dvc.lock with the data version of embed.as_of
    assert any((project / ".dvc-remote").rglob("*")), "dvc push sent nothing"
    locked = subprocess.run(
        ["git", "--git-dir", str(git_remote(project)), "show", "model-v1:params.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert yaml.safe_load(locked)["embed"]["as_of"] == RUN_DATE
    # the model registry says what is in prod
    from orchestration.registry import in_stage

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(git_remote(project)), str(clone)], check=True)
    assert in_stage(clone, "digits", "prod") == 1
    # ...and any clone at model-v1 gets back exactly what version 1 was built from
    subprocess.run(["git", "checkout", "-q", "model-v1"], cwd=clone, check=True)
    subprocess.run(dvc_command("pull", "-q"), cwd=clone, check=True)
    status = subprocess.run(dvc_command("status", "--json"), cwd=clone, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}, status.stdout
    card = json.loads((clone / "models" / "candidate" / "model_card.json").read_text())
    served_card = json.loads((triton.repository / "digits" / "1" / "model_card.json").read_text())
    # (the push adds what it learnt to the served card: evaluate metrics, where it came from)
    assert card["artifacts"] == served_card["artifacts"] and card["git_commit"] == served_card["git_commit"]

    # the served model answers like the candidate's golden samples
    from serving.client import ClientSettings, predict

    golden = json.loads((triton.repository / "digits" / "1" / "golden.json").read_text())
    got = predict(
        np.asarray(golden["inputs"], dtype=np.float32),
        "digits",
        settings=ClientSettings.local(triton, retries=1),
    )
    np.testing.assert_allclose(got, np.asarray(golden["outputs"]), atol=golden["atol"])


ASSET_EVENTS = """
import json
from sqlalchemy import select
from airflow.models.asset import AssetEvent, AssetModel
from airflow.utils.session import create_session
with create_session() as session:
    rows = session.scalars(
        select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        .where(AssetModel.uri == {uri!r}).order_by(AssetEvent.id)
    ).all()
    print("JSON" + json.dumps([
        {{"extra": e.extra, "task_id": e.source_task_id, "run_id": e.source_run_id}} for e in rows
    ]))
"""


def asset_events(env: dict[str, str], uri: str) -> list[dict]:
    """The asset's events from Airflow's metadata database, through Airflow's own models."""
    script = ASSET_EVENTS.format(uri=uri)
    result = subprocess.run(
        [env["PATH"].split(":")[0] + "/python", "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(next(x for x in result.stdout.splitlines() if x.startswith("JSON"))[4:])


def test_push_records_what_serves_as_an_asset_event(first: Run, env) -> None:
    (event,) = asset_events(env, "triton://digits/")  # (Airflow normalizes the URI with a slash)
    assert event["task_id"] == "push" and event["run_id"] in first.output
    extra = event["extra"]
    assert extra["model"] == "digits" and extra["version"] == 1 and extra["created"] is True
    assert extra["git_tag"] == "model-v1" and re.fullmatch(r"[0-9a-f]{40}", extra["git_commit"])
    assert extra["metrics"]["accuracy"] >= 0.85 and "f1_macro" in extra["metrics"]
    assert set(extra["data"]) == {"clean", "split"}
    assert all(re.fullmatch(r"[0-9a-f]{32}\.dir", row["md5"]) for row in extra["data"].values())  # folders of parts


# What each task's "Reports" page must show, and a text only that report has.
REPORT_PAGES = {
    "train": "train_loss: ",  # the training curves, drawn (each chart has a caption with its range)
    "evaluate": "reports/confusion.csv",  # the confusion matrix, beside the class report
    "gate": "decision: passed",  # the gate's decision and its table
    "explain": "Model explanations",  # integrated-gradients maps
}


def test_reports_links_open_the_runs_reports_in_a_browser(first: Run, env, ui_port: int, helpers, tmp_path) -> None:
    """Train, evaluate, explain and gate link to their reports (clean's link: test_report_links), each page
    opened in headless Chromium as the api-server's plugin serves it from the DVC remote."""
    import urllib.parse

    from browser import chromium, screenshot, skip_without_chromium

    skip_without_chromium()
    run_id = first.run_id
    text: dict[str, str] = {}
    with (
        helpers.api_server(env, ui_port, tmp_path / "api-server.log") as api,
        chromium(tmp_path / "chromium", window="1400,1000") as browser,
    ):
        for task_id in REPORT_PAGES:
            run = urllib.parse.quote(run_id, safe="")
            link = api._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{task_id}/links")
            link = link["extra_links"]["Reports"]
            assert link.startswith(f"http://127.0.0.1:{ui_port}/retrain-reports/{DAG_ID}/"), link
            browser.get(link)
            text[task_id] = browser.find_element("tag name", "body").text
            screenshot(browser, f"{task_id}-report-link.png")
    for task_id, expected in REPORT_PAGES.items():
        assert expected in text[task_id], f"{task_id}'s Reports page:\n{text[task_id][:1500]}"


@pytest.fixture(scope="module")
def unchanged(first: Run, env, project: Path, helpers) -> Run:
    return run_dag(env, project, helpers)


def test_second_run_with_same_data_reruns_nothing_and_pushes_nothing(unchanged: Run, project: Path, triton) -> None:
    assert unchanged.log_lines(r"stage (\S+) ran in") == []
    assert set(unchanged.log_lines(r"stage (\S+) was up to date")) == stage_names(project)
    assert unchanged.states["publish"] == "skipped"
    assert "nothing pushed" in unchanged.output
    assert served(triton) == ([1], [1])
    assert tags(project) == PUBLISHED_V1


def test_the_gate_report_carries_the_drift_summary(first: Run, unchanged: Run) -> None:
    """The first run has no reference; the next compares with version 1's training data."""
    assert "**Data drift:** no reference yet (nothing published)" in first.output
    assert "**Data drift** against the training data of model-v1: no drift above the thresholds" in unchanged.output


@pytest.fixture(scope="module")
def worse(unchanged: Run, env, project: Path, helpers) -> Run:
    edit_params(project, train__epochs=1, train__optimizer__lr=0.00001)
    return run_dag(env, project, helpers)


def test_worse_candidate_is_rejected_and_version_1_keeps_serving(worse: Run, project: Path, triton) -> None:
    assert set(worse.log_lines(r"stage (\S+) ran in")) >= {"train", "export", "evaluate"}
    assert worse.states["gate"] == "skipped"
    assert worse.states["push"] == worse.states["publish"] == "skipped"
    assert "candidate rejected: accuracy" in worse.output
    assert "the champion keeps serving" in worse.output
    assert served(triton) == ([1], [1])
    assert tags(project) == PUBLISHED_V1


@pytest.fixture(scope="module")
def corrupted(worse: Run, env, project: Path, helpers) -> Run:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = np.column_stack([digits.target, digits.data]).astype(int)
    rows[::4, 6] = -7  # a quarter of the rows hold a pixel outside data.value_range
    incoming = project / "incoming"
    incoming.mkdir(exist_ok=True)
    header = ",".join(["label", *(f"px_{i}" for i in range(64))])
    np.savetxt(incoming / "digits.csv", rows, fmt="%d", delimiter=",", header=header, comments="")
    edit_params(project, data__source="incoming/digits.csv", train__epochs=6, train__optimizer__lr=0.003)
    # a date of its own: `dags test` replaces the run of the same logical date, which keeps the
    # worse candidate's run (and its gate's page) in the history
    return run_dag(env, project, helpers, date="2026-02-02")


def test_corrupted_data_fails_at_clean_with_nothing_pushed(corrupted: Run, project: Path, triton) -> None:
    assert corrupted.states["clean"] == "failed"
    downstream = [t for t, s in corrupted.states.items() if t not in ("prepare_workspace", "embed", "clean")]
    assert all(corrupted.states[t] in ("upstream_failed", "skipped") for t in downstream), corrupted.states
    assert "clean failed" in corrupted.output and "px_" in corrupted.output
    assert served(triton) == ([1], [1])
    assert tags(project) == PUBLISHED_V1


def test_the_reports_page_of_a_task_without_reports_says_why(
    worse: Run, corrupted: Run, env, ui_port: int, helpers, tmp_path
) -> None:
    """A rejecting gate shows its decision; a failed stage what failed; a task that never ran why."""
    import urllib.error
    import urllib.parse
    import urllib.request

    def page(run: Run, task_id: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{ui_port}/retrain-reports/{DAG_ID}/{urllib.parse.quote(run.run_id, safe='')}/{task_id}"
        request = urllib.request.Request(url, headers={"Accept": "text/html"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - 127.0.0.1
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    with helpers.api_server(env, ui_port, tmp_path / "api-server.log"):
        gate, clean, split = page(worse, "gate"), page(corrupted, "clean"), page(corrupted, "split")
    assert gate[0] == 200 and "decision: rejected" in gate[1] and "rejected: accuracy" in gate[1], gate
    assert "| metric | challenger |" in gate[1], gate[1][:2000]  # the metric diff
    assert clean[0] == 200 and "clean of run" in clean[1] and ": failed" in clean[1], clean
    assert "clean failed" in clean[1] and "px_5" in clean[1], clean[1][:2000]
    assert split[0] == 404 and "a task before it failed" in split[1] and "{" not in split[1][:20], split

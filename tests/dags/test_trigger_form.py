"""The Trigger form: DAG params a person sets when starting a run (require approval, another data
source, a note), checked before any stage runs.

- JSON-schema types are checked by Airflow when the run is created (a wrong type creates no run);
- prepare_workspace checks the values against the project (the data source exists, the params
  still load) and fails with a message naming the value; no stage runs;
- a valid data source reaches the stages: clean reads it (the real DAG through `airflow dags
  test`, the stages after clean marked successful without running, to keep it short).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from orchestration.tasks import demo_as_of, form_overrides

DAG_ID = "retrain"
AFTER_CLEAN = r"^(split|train|crossval|export|evaluate|gate|approve|push|publish)"


def test_form_overrides_check_the_data_source(project_copy: Path) -> None:
    assert form_overrides(project_copy, {"data_source": None, "note": "x"}) == {}
    assert form_overrides(project_copy, {"data_source": "  "}) == {}
    with pytest.raises(ValueError, match=r"data_source 'nowhere\.csv' does not exist .*leave it empty"):
        form_overrides(project_copy, {"data_source": "nowhere.csv"})
    (project_copy / "incoming").mkdir()
    (project_copy / "incoming" / "rows.csv").write_text("label,px_0\n1,2\n")
    assert form_overrides(project_copy, {"data_source": "incoming/rows.csv"}) == {"data.source": "incoming/rows.csv"}
    # a URL is the workers' business (DVC reads it); it is passed on as it is
    assert form_overrides(project_copy, {"data_source": "s3://bucket/rows.csv"}) == {
        "data.source": "s3://bucket/rows.csv"
    }


def test_the_forms_as_of_dates_a_demo_run_and_is_checked() -> None:
    """`make run` sets as_of (its run is dated now); empty, a demo run ingests the batches up to its own date."""
    run = {"data_interval_end": dt.datetime(2026, 1, 26, tzinfo=dt.UTC)}
    assert demo_as_of(True, {"as_of": "2026-02-09"}, run) == "2026-02-09"
    assert demo_as_of(True, {"as_of": None}, run) == "2026-01-26"
    with pytest.raises(ValueError, match=r"as_of 'next monday' is not a date YYYY-MM-DD"):
        demo_as_of(True, {"as_of": "next monday"}, run)
    with pytest.raises(ValueError, match="applies to the demo batches only"):
        demo_as_of(False, {"as_of": "2026-02-09"}, run)
    assert demo_as_of(False, {}, run) is None


def test_a_run_without_require_approval_approves_at_once() -> None:
    from orchestration.approval import RunApproval

    approval = RunApproval(task_id="approve", subject="Deploy?", body="diff")
    assert approval.execute({"params": {"require_approval": False}}) == {"chosen_options": ["Approve"], "asked": False}


@pytest.mark.airflow
@pytest.mark.integration
def test_invalid_form_values_stop_the_run_before_any_stage(project_copy: Path, make_airflow_home, helpers) -> None:
    env = make_airflow_home(project_copy / "dags")

    run_id, output, _ = helpers.dags_test(
        env, project_copy, "2026-01-12", "-c", json.dumps({"require_approval": "yes"})
    )
    assert run_id is None and "DagRun Finished" not in output
    assert "require_approval" in output and "is not of type 'boolean'" in output, output[-3000:]

    _, output, run = helpers.dags_test_run(
        env, project_copy, "2026-01-19", "-c", json.dumps({"data_source": "nowhere.csv"})
    )
    assert run["prepare_workspace"] == "failed"
    assert all(s == "upstream_failed" for t, s in run.items() if t != "prepare_workspace"), run
    assert "the run's parameters (Trigger form) are invalid: data_source 'nowhere.csv' does not exist" in output


@pytest.mark.airflow
@pytest.mark.integration
def test_the_forms_data_source_and_note_reach_the_run(project_copy: Path, make_airflow_home, helpers) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = np.column_stack([digits.target, digits.data]).astype(int)[:900]
    (project_copy / "incoming").mkdir()
    header = ",".join(["label", *(f"px_{i}" for i in range(64))])
    np.savetxt(project_copy / "incoming" / "few.csv", rows, fmt="%d", delimiter=",", header=header, comments="")
    env = make_airflow_home(project_copy / "dags")

    _, output, run = helpers.dags_test_run(
        env,
        project_copy,
        "2026-01-26",
        "-c",
        json.dumps({"data_source": "incoming/few.csv", "note": "900 rows from the lab"}),
        "--mark-success-pattern",
        AFTER_CLEAN,
    )
    assert run["prepare_workspace"] == run["embed"] == run["clean"] == "success", run
    assert "note: 900 rows from the lab" in output
    # clean ran in its own checkout of the run's commit, whose params name the form's source
    (checkout,) = (project_copy / ".airflow" / "worker" / "runs").glob("*/clean*")
    assert 'source: "incoming/few.csv"' in (checkout / "params.yaml").read_text()
    assert json.loads((checkout / "metrics" / "clean.json").read_text())["rows_in"] == 900

"""`python -m devtools results` (the end of `make run`): the published version checked out in
`.airflow/results` with only its shown outputs pulled from the DVC remote, and the gate's table read
from the gate task's checkout. On the toy project (tests/airflow_fixtures.py), with real git and DVC."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from devtools import results
from orchestration import steps

pytestmark = pytest.mark.integration  # real git and DVC


def test_results_check_out_the_published_version_with_its_shown_outputs(
    tmp_path: Path, helpers, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    toy = helpers.toy_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    monkeypatch.setattr(os, "environ", env)
    fleet = steps.Fleet.resolve(toy, env)
    assert results.show(toy) == 1  # nothing published yet: said, not a traceback
    assert "no published version" in capsys.readouterr().err

    prepared = steps.prepare(fleet, "run-1", None)
    done: list[dict] = []
    for name in ["prep", "fold@0", "fold@1", "fold@2", "summary"]:
        done.append(steps.stage(fleet, "run-1", prepared, name, done))
    steps.publish(fleet, "run-1", prepared, done, 1, "toy", "first")
    # The gate wrote its report in its own checkout of the run on this worker.
    gate = fleet.ws.worker_root / "runs" / "run-1" / "gate" / "reports" / "gate.json"
    gate.parent.mkdir(parents=True)
    gate.write_text(json.dumps({"reason": "passed: first deployment", "diff_markdown": "| metric | candidate |"}))

    # The toy's one small output stands for reports/, metrics/ and dvclive/.
    monkeypatch.setattr(results, "SHOWN_ROOTS", ("summary.json",))
    assert results.show(toy, "run-1") == 0
    shown = capsys.readouterr().out
    checkout = toy / results.RESULTS_DIR
    assert "passed: first deployment" in shown and "| metric | candidate |" in shown
    assert "The published version model-v1" in shown and str(gate) in shown
    assert "(dvc metrics show" not in shown and "(dvc plots show" not in shown  # both ran, side by side
    assert json.loads((checkout / "summary.json").read_text())["folds"] == ["0.json", "1.json", "2.json"]
    assert not (checkout / "data.txt").exists()  # data and models stay on the remote
    assert (checkout / "dvc.lock").is_file()  # the published lock: dvc metrics/plots show work there


def test_metrics_read_as_lines_per_file_not_one_table_a_column_per_key() -> None:
    shown = json.dumps(
        {
            "": {
                "data": {
                    "metrics/evaluate.json": {"data": {"accuracy": 0.98888888, "test_rows": 270}},
                    "metrics/split.json": {"data": {f"train.{c}": 100 + c for c in range(40)} | {"rows": {"test": 27}}},
                }
            }
        }
    )
    lines = results.metrics_lines(shown, width=80)
    assert lines[0] == f"  {'metrics/evaluate.json':<28} accuracy=0.9889  test_rows=270"
    split = lines[1:]
    assert split[0].startswith(f"  {'metrics/split.json':<28} train.0=100  ") and len(split) > 3
    assert all(len(line) <= 80 and line.startswith(" " * 31) for line in split[1:])  # wrapped under its file
    assert " ".join(split).split()[-1] == "rows.test=27"  # nested keys dotted, no pair cut in two
    failed = "(dvc metrics show --json failed: no dvc.lock)"
    assert results.metrics_lines(failed) == [f"  {failed}"]

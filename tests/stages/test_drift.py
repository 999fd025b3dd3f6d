"""The drift stage: its core on the embedded digits set (no reference, unshifted, shifted), its
CLI (warn writes everything, fail stops naming the features), and the gate's drift summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from browser import chromium, screenshot, skip_without_chromium
from drift_data import digits_table, shifted, write
from support import ROOT

from pipeline.drift import DriftError
from pipeline.params import DriftParams
from stages import drift
from stages.drift import Reference
from stages.gate import Decision, decide, diff_markdown

PARAMS = DriftParams()


def reference_of(table: pd.DataFrame, tmp_path: Path, params, tag: str = "model-v1") -> Reference:
    result = drift.run(write(table, tmp_path / "reference.parquet"), Reference(None, None), params.data, PARAMS)
    return Reference(result.profile, tag)


def test_no_reference_passes_and_says_so(tmp_path: Path, params) -> None:
    result = drift.run(write(digits_table(), tmp_path / "clean.parquet"), Reference(None, None), params.data, PARAMS)
    assert result.metrics == {"action": "warn", "rows": 1797, "reference": None, "status": "no_reference"}
    assert not result.drifted
    assert "No reference yet" in result.report_html
    assert result.profile.rows == 1797 and len(result.profile.features) == 64


def test_the_same_data_is_ok(tmp_path: Path, params) -> None:
    table = digits_table()
    reference = reference_of(table, tmp_path, params)
    result = drift.run(write(table, tmp_path / "clean.parquet"), reference, params.data, PARAMS)
    m = result.metrics
    assert m["status"] == "ok" and m["reference"] == "model-v1"
    assert m["max_psi"] == m["mean_psi"] == m["class_psi"] == 0.0 and m["drifted_features"] == 0
    assert m["rows_change"] == 0 and m["features"] == 64 and len(m["top"]) == PARAMS.top_n


def test_a_shifted_copy_is_drift_with_the_top_features_reported(tmp_path: Path, params) -> None:
    table = digits_table()
    reference = reference_of(table, tmp_path, params)
    result = drift.run(write(shifted(table), tmp_path / "clean.parquet"), reference, params.data, PARAMS)
    m = result.metrics
    assert result.drifted and m["status"] == "drift" and not m["class_shifted"]
    assert m["drifted_features"] >= 16 and m["max_psi"] > 1.0
    top = list(m["top"])
    assert list(m["top"].values()) == sorted(m["top"].values(), reverse=True)
    for name in top[:3]:
        assert f"<td>{name}</td>" in result.report_html
    assert "DRIFT" in result.report_html and "<svg" in result.report_html
    message = drift.failure_message(m)
    assert top[0] in message and "drift.action: warn" in message


def test_a_class_balance_shift_alone_is_drift(tmp_path: Path, params) -> None:
    table = digits_table()
    reference = reference_of(table, tmp_path, params)
    few_zeros = pd.concat([table[table.label != 0], table[table.label == 0].iloc[:10]], ignore_index=True)
    m = drift.run(write(few_zeros, tmp_path / "clean.parquet"), reference, params.data, PARAMS).metrics
    assert m["status"] == "drift" and m["class_shifted"] and m["class_psi"] > PARAMS.class_threshold
    assert "class balance shifted" in drift.failure_message(m)


def test_an_unreadable_reference_says_how_to_restore_it(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text('{"profile": {"rows": 1}}')
    with pytest.raises(DriftError, match="git checkout --"):
        Reference.load(path)
    assert Reference.load(tmp_path / "absent.json") == Reference(None, None)


def test_the_shipped_reference_is_no_reference() -> None:
    assert Reference.load(ROOT / "reference" / "profile.json") == Reference(None, None)


# --- the CLI, as DVC runs it ---------------------------------------------------------------------
def cli(tmp_path: Path, table: pd.DataFrame, reference: Reference, action: str) -> subprocess.CompletedProcess:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["drift"]["action"] = action
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    write(table, tmp_path / "clean.parquet")
    (tmp_path / "reference.json").write_text(json.dumps(reference.to_json()))
    args = ["--clean", "clean.parquet", "--reference", "reference.json", "--profile", "out/profile.json"]
    args += ["--metrics", "out/drift.json", "--report", "out/drift.html"]
    return subprocess.run(
        [sys.executable, "-m", "stages.drift", *args, "--params", "params.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )


def test_cli_warn_writes_every_output_and_logs_the_drift(tmp_path: Path, params) -> None:
    table = digits_table()
    done = cli(tmp_path, shifted(table), reference_of(table, tmp_path, params), "warn")
    assert done.returncode == 0, done.stderr
    assert "drift (action: warn)" in done.stderr
    metrics = json.loads((tmp_path / "out/drift.json").read_text())
    assert metrics["status"] == "drift" and metrics["reference"] == "model-v1"
    profile = json.loads((tmp_path / "out/profile.json").read_text())
    assert profile["rows"] == 1797 and "px_9" in profile["features"]
    assert "Data drift report" in (tmp_path / "out/drift.html").read_text()


def test_cli_fail_stops_naming_the_features_and_keeps_only_the_report(tmp_path: Path, params) -> None:
    table = digits_table()
    done = cli(tmp_path, shifted(table), reference_of(table, tmp_path, params), "fail")
    assert done.returncode == 1
    assert "drift failed: the data drifted from the reference (model-v1)" in done.stderr
    assert "px_" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out/drift.json").exists() and not (tmp_path / "out/profile.json").exists()
    assert (tmp_path / "out/drift.html").exists()


def test_cli_fail_passes_unshifted_data(tmp_path: Path, params) -> None:
    table = digits_table()
    done = cli(tmp_path, table, reference_of(table, tmp_path, params), "fail")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out/drift.json").read_text())["status"] == "ok"


# --- the gate's report ---------------------------------------------------------------------------
def test_the_gate_report_carries_the_drift_summary(tmp_path: Path, params) -> None:
    table = digits_table()
    metrics = drift.run(
        write(shifted(table), tmp_path / "clean.parquet"), reference_of(table, tmp_path, params), params.data, PARAMS
    ).metrics
    base = decide({"accuracy": 0.97, "f1_macro": 0.96}, None, params.gate)
    decision = Decision(base.passed, base.reason, base.checks, drift=metrics)
    text = diff_markdown(decision)
    assert "| accuracy |" in text  # the metric table is still there, first
    assert "**Data drift** against the training data of model-v1: DRIFT (drift.action: warn)" in text
    assert "rows: 1797 (reference 1797, +0, +0.0%)" in text
    assert f"features: {metrics['drifted_features']} of 64 above PSI 0.25" in text
    assert decision.to_json()["diff_markdown"] == text and decision.to_json()["drift"] == metrics
    first = Decision(base.passed, base.reason, base.checks, drift={"status": "no_reference", "rows": 1797})
    assert "no reference yet" in diff_markdown(first)
    assert "Data drift" not in diff_markdown(base)


@pytest.mark.integration  # starts headless Chromium (a few seconds)
def test_the_report_renders_in_headless_chromium(tmp_path: Path, params) -> None:
    """The report of a shifted copy, opened in a real browser; the screenshot is kept as a test
    artifact (TEST_ARTIFACTS_DIR, default .airflow/test-artifacts)."""
    skip_without_chromium()
    table = digits_table()
    result = drift.run(
        write(shifted(table), tmp_path / "clean.parquet"), reference_of(table, tmp_path, params), params.data, PARAMS
    )
    page = tmp_path / "drift.html"
    page.write_text(result.report_html)
    with chromium(tmp_path / "profile", window="1000,1600") as browser:
        browser.get(page.as_uri())
        dom = browser.page_source
        shot = screenshot(browser, "drift-report.png")
    top = next(iter(result.metrics["top"]))
    assert "Data drift report" in dom and f"<td>{top}</td>" in dom and dom.count("<svg") == PARAMS.top_n
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one

"""clean: the happy path and every bad input the data contract rejects."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline.params import CleanParams
from pipeline.sources import read_source
from pipeline.tables import TableError
from stages import clean

LENIENT = CleanParams(min_rows=10, max_quarantine_share=0.2, max_duplicate_share=0.2)


def test_clean_table_passes_whole(image_table, params):
    result = clean.run(image_table, params.data, LENIENT)
    assert len(result.clean) == len(image_table)
    assert result.quarantine.empty
    assert result.metrics["rows_quarantined"] == 0
    assert result.clean["px_0"].dtype == np.uint8  # compact dtypes survive
    assert "Great Expectations" in result.report_html


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda t: t.__setitem__("px_5", t["px_5"].astype(float).where(t.index != 3, np.nan)), "missing feature value"),
        (lambda t: t.__setitem__("px_7", t["px_7"].astype(int).where(t.index != 3, 99)), "above range"),
        (lambda t: t.__setitem__("label", t["label"].astype(int).where(t.index != 3, 42)), "unknown label 42"),
        (lambda t: t.iloc.__setitem__(3, t.iloc[0]), "exact duplicate"),
    ],
    ids=["nan", "out-of-range", "unknown-label", "duplicate"],
)
def test_bad_rows_are_quarantined_with_a_reason(image_table, params, corrupt, reason):
    corrupt(image_table)
    result = clean.run(image_table, params.data, LENIENT)
    assert list(result.quarantine["row"]) == [3]
    assert reason in result.quarantine["reason"].iloc[0]
    assert len(result.clean) == len(image_table) - 1
    assert result.metrics["rows_quarantined"] == 1


def test_out_of_range_reason_names_column_and_value(image_table, params):
    image_table["px_7"] = image_table["px_7"].astype(int)
    image_table.loc[3, "px_7"] = 99
    reason = clean.run(image_table, params.data, LENIENT).quarantine["reason"].iloc[0]
    assert "px_7=99" in reason and "[0, 16]" in reason


def test_too_many_quarantined_rows_fail_naming_the_check(image_table, params):
    image_table["px_9"] = image_table["px_9"].astype(int)
    image_table.loc[:60, "px_9"] = 17
    with pytest.raises(clean.ValidationFailed) as error:
        clean.run(image_table, params.data, LENIENT)
    message = str(error.value)
    assert "max_quarantine_share" in message and "px_9=17" in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t.drop(columns=["px_12"]), "feature columns"),
        (lambda t: t.assign(extra=1), "unexpected ['extra']"),
        (lambda t: t.drop(columns=["label"]), "label column 'label' is missing"),
        (lambda t: t.assign(px_3="abc"), "non-numeric feature column(s) ['px_3']"),  # no value is a number
        (lambda t: t.head(5), "too few rows"),
    ],
    ids=["missing-column", "unexpected-column", "no-label", "wrong-type", "too-few-rows"],
)
def test_table_level_failures_stop_with_a_clear_message(image_table, params, mutate, expected):
    with pytest.raises(clean.ValidationFailed) as error:
        clean.run(mutate(image_table), params.data, LENIENT)
    assert expected in str(error.value)


def test_missing_feature_column_is_named(image_table, params):
    with pytest.raises(clean.ValidationFailed) as error:
        clean.run(image_table.drop(columns=["px_5"]), params.data, LENIENT)
    message = str(error.value)
    assert "missing ['px_5']" in message
    assert "found 63 feature columns" in message


def test_renamed_feature_column_names_the_missing_and_the_unexpected_one(image_table, params):
    """px_5 renamed to px_64 keeps the count right but shifts the image: both names are reported."""
    with pytest.raises(clean.ValidationFailed) as error:
        clean.run(image_table.rename(columns={"px_5": "px_64"}), params.data, LENIENT)
    message = str(error.value)
    assert "missing ['px_5']" in message and "unexpected ['px_64']" in message


def test_duplicate_share_limit(image_table, params):
    image_table.iloc[1:40] = image_table.iloc[0]
    strict = CleanParams(min_rows=10, max_quarantine_share=0.5, max_duplicate_share=0.05)
    with pytest.raises(clean.ValidationFailed, match="max_duplicate_share"):
        clean.run(image_table, params.data, strict)


def test_unreadable_and_empty_files_are_table_errors(tmp_path):
    garbage = tmp_path / "raw.parquet"
    garbage.write_bytes(b"not a parquet file")
    with pytest.raises(TableError, match="unreadable"):
        read_source(garbage)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TableError):
        read_source(empty)
    with pytest.raises(TableError, match="not found"):
        read_source(tmp_path / "missing.csv")


def test_folder_of_csv_files_is_one_table(image_table, tmp_path):
    image_table.iloc[:100].to_csv(tmp_path / "a.csv", index=False)
    image_table.iloc[100:].to_csv(tmp_path / "b.csv", index=False)
    assert len(read_source(tmp_path)) == len(image_table)


def test_cli_failure_writes_nothing_and_keeps_previous_outputs(image_table, tmp_path, project_root):
    """A failing clean leaves every output of the last good run byte-for-byte as it was."""
    raw = tmp_path / "raw.csv"
    image_table.to_csv(raw, index=False)
    outs = {name: tmp_path / f"out.{name}" for name in ("out", "quarantine", "metrics", "report")}
    cmd = [sys.executable, "-m", "stages.clean", "--raw", str(raw), "--params", str(project_root / "params.yaml")]
    cmd += [arg for name, path in outs.items() for arg in (f"--{name}", str(path))]
    subprocess.run(cmd, cwd=project_root, check=True, capture_output=True)
    before = {name: _contents(path) for name, path in outs.items()}

    pd.DataFrame({"label": [1, 2], "px_0": [0, 1]}).to_csv(raw, index=False)  # wrong shape
    failed = subprocess.run(cmd, cwd=project_root, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "clean failed" in failed.stderr and "feature columns" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert {name: _contents(path) for name, path in outs.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["raw.csv", *(p.name for p in outs.values())])
    assert "previous outputs are untouched" in failed.stderr  # true outside DVC


def _contents(path):
    """A file's bytes, or a folder's files' bytes by name (the tables are folders of parts)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())} if path.is_dir() else path.read_bytes()


def test_cli_failure_under_dvc_says_how_to_restore_outputs(image_table, tmp_path, project_root):
    """Under `dvc repro` the outputs are gone before the stage starts (DVC removes them and sets
    DVC_STAGE for the command): the message must not claim they are untouched."""
    raw = tmp_path / "raw.csv"
    pd.DataFrame({"label": [1, 2], "px_0": [0, 1]}).to_csv(raw, index=False)
    cmd = [sys.executable, "-m", "stages.clean", "--raw", str(raw), "--params", str(project_root / "params.yaml")]
    cmd += [arg for name in ("out", "quarantine", "metrics", "report") for arg in (f"--{name}", str(tmp_path / name))]
    env = {**os.environ, "DVC_STAGE": "clean"}
    failed = subprocess.run(cmd, cwd=project_root, capture_output=True, text=True, env=env)
    assert failed.returncode == 1
    assert "untouched" not in failed.stderr
    assert "dvc checkout clean" in failed.stderr

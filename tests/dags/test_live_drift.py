"""The live drift check's core (orchestration/live_drift.py): live rows shifted like the drift
stage's test shift drift, unshifted ones do not, too few rows or no reference start nothing; the
decision's seam; which sample parts a check reads; the params that turn it on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from drift_data import FEATURES, digits_table, shifted, write
from support import ROOT

from orchestration.live_drift import (
    Reason,
    check_sample,
    decide,
    labelled_reason,
    live_table,
    parts_between,
    served_names,
)
from orchestration.params import load_project_params, parse_project_params
from pipeline.drift import profile
from pipeline.params import ParamsError, read_params
from stages.drift import Reference

PARAMS = load_project_params(ROOT / "params.yaml")
CONTRACT, DRIFT = PARAMS.data, PARAMS.drift


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """The profile of the digits as publish keeps it: JSON with sorted keys (px_10 before px_2)."""
    root = tmp_path_factory.mktemp("reference")
    table = write(digits_table(), root / "clean.parquet")
    made, _ = profile(table, "label", FEATURES, DRIFT.bins, DRIFT.sample_rows)
    path = root / "profile.json"
    path.write_text(json.dumps({"profile": made.to_json(), "tag": "model-v1"}, indent=2, sort_keys=True))
    return Reference.load(path)


def sample_of(table: pd.DataFrame) -> pa.Table:
    """Rows as the server keeps them: the input row as one list, the answer as top_class (here the
    true label: a model that is right)."""
    rows = table[FEATURES].to_numpy(np.float32)
    return pa.table(
        {
            "request_id": [f"r{i}" for i in range(len(table))],
            "row": [0] * len(table),
            "input": pa.array(list(rows), type=pa.list_(pa.float32())),
            "top_class": pa.array(table["label"].to_numpy(np.int64)),
        }
    )


def rows(n: int, seed: int = 0) -> pd.DataFrame:
    table = digits_table()
    return table.iloc[np.random.default_rng(seed).choice(len(table), n, replace=False)].reset_index(drop=True)


def test_live_rows_shifted_like_the_drift_test_shift_drift_and_ask_for_a_retrain(reference) -> None:
    checked = check_sample(sample_of(shifted(rows(600))), reference, CONTRACT, DRIFT, min_rows=500)
    assert checked.reason.start and checked.rows == 600
    assert checked.metrics is not None and checked.metrics["status"] == "drift"
    assert checked.metrics["drifted_features"] > 0 and checked.metrics["reference"] == "model-v1"
    assert "drifted above PSI 0.25" in checked.reason.message
    assert "Live drift check" in checked.report_html and "DRIFT" in checked.report_html


def test_unshifted_live_rows_do_not_drift(reference) -> None:
    checked = check_sample(sample_of(rows(600, seed=1)), reference, CONTRACT, DRIFT, min_rows=500)
    assert checked.metrics is not None
    assert not checked.reason.start, checked.reason.message
    assert checked.metrics["status"] == "ok" and checked.metrics["max_psi"] < DRIFT.threshold
    assert "no drift" in checked.reason.message


def test_the_input_row_maps_to_the_features_in_table_order_not_the_references_sorted_order(reference) -> None:
    sample = sample_of(rows(20))
    table = live_table(sample, list(reference.profile.features), CONTRACT)  # type: ignore[union-attr]
    assert list(reference.profile.features)[:3] == ["px_0", "px_1", "px_10"]  # type: ignore[union-attr]
    first = np.asarray(sample["input"][0].as_py())
    assert table["px_10"][0].as_py() == first[10] and table["px_2"][0].as_py() == first[2]
    assert table["label"].to_pylist() == [str(c) for c in sample["top_class"].to_pylist()]


def test_too_few_rows_or_no_reference_start_nothing(reference) -> None:
    few = check_sample(sample_of(shifted(rows(100))), reference, CONTRACT, DRIFT, min_rows=500)
    assert not few.reason.start and few.metrics is None
    assert "fewer than airflow.live_drift.min_rows (500)" in few.reason.message
    nothing = check_sample(sample_of(shifted(rows(600))), Reference(None, None), CONTRACT, DRIFT, min_rows=500)
    assert not nothing.reason.start and "no reference yet" in nothing.reason.message
    empty = check_sample(pa.table({}), reference, CONTRACT, DRIFT, min_rows=1)
    assert not empty.reason.start and empty.rows == 0


def test_one_asking_reason_starts_one_retrain_and_the_message_says_which() -> None:
    assert not decide([]).start
    quiet = decide([Reason("drift", False, "no drift")])
    assert not quiet.start and quiet.message == "no retrain: drift: no drift"
    both = decide([Reason("drift", False, "no drift"), Reason("accuracy", True, "accuracy 0.90 < 0.95")])
    assert both.start and both.message == "start a retrain: accuracy: accuracy 0.90 < 0.95"
    assert [r["source"] for r in both.to_json()["reasons"]] == ["drift", "accuracy"]


def test_a_check_reads_the_parts_written_in_its_interval_once(tmp_path: Path) -> None:
    names = served_names("digits")
    assert names == ["digits", "digits.champion"]
    written = {}
    for name, part, at in [
        ("digits", "part-a.parquet", 100.0),
        ("digits", "part-b.parquet", 160.0),
        ("digits.champion", "part-c.parquet", 130.0),
        ("digits.candidate", "part-d.parquet", 130.0),  # the candidate is not the serving version
        ("digits", ".part-e.parquet.tmp", 130.0),  # still being written
    ]:
        path = tmp_path / name / part
        path.parent.mkdir(exist_ok=True)
        pq.write_table(pa.table({"x": [1]}), path)
        os.utime(path, (at, at))
        written[part] = path
    first = parts_between(tmp_path, names, 100.0, 160.0)
    second = parts_between(tmp_path, names, 160.0, 220.0)
    assert first == [written["part-a.parquet"], written["part-c.parquet"]]
    assert second == [written["part-b.parquet"]]


def with_keys(serving_sample: dict, live: dict) -> dict:
    raw = read_params(ROOT / "params.yaml")
    raw["serving"]["sample"].update(serving_sample)
    raw["airflow"]["live_drift"].update(live)
    return raw


def test_the_check_is_on_only_with_a_sample_and_an_interval() -> None:
    assert not PARAMS.live_drift_on  # the project's default: serving.sample.rate 0, nothing to read
    on = parse_project_params(with_keys({"rate": 0.1}, {"interval_s": 60}))
    assert on.live_drift_on and on.airflow.live_drift.min_rows == 500 and on.airflow.live_drift.asset == "live_drift"
    assert not parse_project_params(with_keys({"rate": 0.1}, {"interval_s": None})).live_drift_on
    with pytest.raises(ParamsError, match="min_row"):
        parse_project_params(with_keys({}, {"min_row": 5}))


def labelled_rows(labels: list[int], answers: list[int]) -> pa.Table:
    """Joined sample and labels as serving.live.labels.labelled returns them (the columns read here)."""
    return pa.table({"label": [str(v) for v in labels], "top_class": pa.array(answers, pa.int32())})


def test_labelled_accuracy_below_a_gate_floor_asks_for_a_retrain_and_enough_labels_are_needed() -> None:
    classes, floors = list(range(10)), PARAMS.gate.floors  # accuracy and f1_macro at 0.95
    truth = [i % 10 for i in range(300)]
    right = labelled_reason(labelled_rows(truth, truth), classes, floors, min_labels=200)
    assert right.source == "accuracy" and not right.start and "every gate floor met" in right.message
    # One answer in ten wrong: accuracy 0.9 < 0.95.
    wrong = [(t + 1) % 10 if i % 10 == 0 else t for i, t in enumerate(truth)]
    low = labelled_reason(labelled_rows(truth, wrong), classes, floors, min_labels=200)
    assert low.start and "accuracy 0.9000 < gate.floors.accuracy 0.95" in low.message
    few = labelled_reason(labelled_rows(truth[:100], wrong[:100]), classes, floors, min_labels=200)
    assert not few.start and "fewer than airflow.live_drift.min_labels" in few.message
    # Drift quiet, accuracy low: one retrain, and the message names the labels.
    decision = decide([Reason("drift", False, "no drift"), low])
    assert decision.start and decision.message.startswith("start a retrain: accuracy: on 300 labelled")

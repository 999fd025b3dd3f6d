"""crossval: one fold trains with the shared loop and scores its held-out rows; the summary's math
and its choice of folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.params import parse_params
from pipeline.rows import SplitTable
from stages import crossval, crossval_summary
from stages._cli import StageError
from stages.split import split_stratified

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny(params):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"] |= {"epochs": 3, "batch_size": 32, "device": "cpu"}
    raw["train"]["model"] |= {"channels": [8], "hidden": [32]}
    raw["train"]["optimizer"] |= {"lr": 0.01}
    return parse_params(raw)


def test_a_fold_is_scored_on_its_held_out_rows(image_table, tiny):
    assignment = split_stratified(image_table["label"].to_numpy(), tiny.split)
    metrics = crossval.run(SplitTable.of(image_table, assignment, tiny.data), tiny.data, tiny.train, tiny.split, fold=2)
    held_out = int(((assignment["split"] == "train") & (assignment["fold"] == 2)).sum())
    assert metrics["fold"] == 2 and metrics["rows"] == held_out
    assert metrics["accuracy"] > 0.3 and 0 <= metrics["f1_macro"] <= 1 and metrics["loss"] > 0


def test_an_unknown_fold_is_refused(image_table, tiny):
    assignment = split_stratified(image_table["label"].to_numpy(), tiny.split)
    with pytest.raises(StageError, match="fold 7"):
        crossval.run(SplitTable.of(image_table, assignment, tiny.data), tiny.data, tiny.train, tiny.split, fold=7)


def test_summary_is_mean_and_sample_std_per_metric():
    per_fold = {0: fold_metrics(accuracy=0.9, f1_macro=0.8, loss=0.3), 1: fold_metrics(accuracy=1.0, loss=0.1)}
    summary = crossval_summary.summarize(per_fold)
    assert summary["k"] == 2
    assert summary["accuracy"]["mean"] == pytest.approx(0.95)
    assert summary["accuracy"]["std"] == pytest.approx(np.std([0.9, 1.0], ddof=1))
    assert summary["loss"]["folds"] == {"0": 0.3, "1": 0.1}


def fold_metrics(**values: float) -> dict[str, float]:
    """A fold file's scores: every name crossval writes (1.0 unless given)."""
    return {name: values.get(name, 1.0) for name in crossval_summary.METRICS}


def _write_folds(folder: Path, folds: list[int]) -> None:
    folder.mkdir()
    for f in folds:
        metrics = {"fold": f, **fold_metrics(accuracy=0.9 + f / 100, loss=0.2), "rows": 10}
        (folder / f"fold-{f}.json").write_text(json.dumps(metrics))


def test_summary_reads_only_the_listed_folds(tmp_path):
    _write_folds(tmp_path / "cv", [0, 1, 2, 3])  # fold 3 is left over from an earlier, larger k
    found = crossval_summary.read_folds(tmp_path / "cv", [0, 1, 2])
    assert sorted(found) == [0, 1, 2]
    assert crossval_summary.summarize(found)["accuracy"]["mean"] == pytest.approx(0.91)


def test_a_missing_fold_is_an_error(tmp_path):
    _write_folds(tmp_path / "cv", [0, 2])
    with pytest.raises(StageError, match=r"fold\(s\) \[1\]"):
        crossval_summary.read_folds(tmp_path / "cv", [0, 1, 2])

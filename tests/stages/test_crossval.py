"""crossval: one fold trains with the shared loop and scores its held-out rows (the summary's tests
are in test_crossval_summary.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.params import parse_params
from pipeline.rows import SplitTable
from stages import crossval
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

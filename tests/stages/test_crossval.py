"""crossval: one fold trains with the shared loop and scores its held-out rows (the summary's tests
are in test_crossval_summary.py)."""

from __future__ import annotations

import json
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


@pytest.mark.distributed
def test_the_cli_runs_a_fold_under_two_processes(tmp_path, image_table):
    """As DVC runs it: `python -m stages.crossval` re-executes itself under torchrun, and rank 0
    alone writes the fold's metrics."""
    import subprocess
    import sys

    from pipeline.tables import write_parquet

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["source"] = "unused.parquet"
    raw["train"] |= {"epochs": 2, "batch_size": 32, "device": "cpu"}
    raw["train"]["model"] |= {"channels": [8], "hidden": [32]}
    raw["train"]["distributed"] = {"nproc_per_node": 2, "nnodes": 1}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    write_parquet(image_table, tmp_path / "clean.parquet")
    write_parquet(
        split_stratified(image_table["label"].to_numpy(), parse_params(raw).split), tmp_path / "split.parquet"
    )
    args = ["--fold", "1", "--clean", "clean.parquet", "--split", "split.parquet"]
    args += ["--metrics", "cv/fold-1.json", "--params", "params.yaml"]
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [sys.executable, "-m", "stages.crossval", *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "running under torchrun" in done.stderr and "process 1 of 2 (gloo)" in done.stderr
    metrics = json.loads((tmp_path / "cv" / "fold-1.json").read_text())
    assert metrics["fold"] == 1 and 0 <= metrics["accuracy"] <= 1 and metrics["epochs"] >= 1

"""split: stratified, reproducible, folds only over training rows."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.params import SplitParams
from stages import _cli, split


def labels(per_class: int = 30, classes: int = 10) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


def test_split_is_stratified_and_complete():
    assignment, metrics = split.run(labels(), SplitParams(seed=1, val_fraction=0.2, test_fraction=0.2))
    assert list(assignment["row"]) == list(range(300))
    assert metrics["rows"] == {"train": 180, "val": 60, "test": 60}
    for part in ("train", "val", "test"):
        counts = set(metrics[part].values())
        assert max(counts) - min(counts) <= 1, f"{part} is not stratified: {metrics[part]}"


def test_folds_cover_training_rows_only():
    assignment, metrics = split.run(labels(), SplitParams(folds=[0, 1, 2]))
    train = assignment["split"] == "train"
    assert set(assignment.loc[train, "fold"]) == {0, 1, 2}
    assert set(assignment.loc[~train, "fold"]) == {-1}
    assert sum(metrics["folds"].values()) == int(train.sum())


def test_same_seed_same_split_other_seed_other_split():
    a, _ = split.run(labels(), SplitParams(seed=7))
    b, _ = split.run(labels(), SplitParams(seed=7))
    c, _ = split.run(labels(), SplitParams(seed=8))
    assert a.equals(b)
    assert not a["split"].equals(c["split"])


def test_too_rare_class_is_a_clear_error():
    y = np.concatenate([labels(), [10, 10]])
    with pytest.raises(_cli.StageError, match="class 10 has only 2 row"):
        split.run(y, SplitParams())


def test_rare_class_message_names_the_class_as_written():
    y = np.concatenate([np.repeat(np.array(["cat", "dog"]), 30), ["eel"] * 3])
    with pytest.raises(_cli.StageError, match="class 'eel' has only 3 row"):
        split.run(y, SplitParams())


def test_split_does_not_import_the_clean_engine(project_root):
    # split reads one column; clean's engine (GX, the row hasher, the sinks) is no part of its memory.
    probe = "import sys, stages.split; print(sorted(m for m in sys.modules if m.startswith('pipeline.')))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=project_root, capture_output=True, text=True, check=True)
    loaded = out.stdout
    assert "pipeline.engines.local" not in loaded
    assert "pipeline.validation" not in loaded

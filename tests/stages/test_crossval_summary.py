"""crossval_summary: mean and sample standard deviation per metric, and its choice of folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import metrics
from stages import crossval_summary
from stages._cli import StageError


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


def test_a_fold_file_without_a_score_is_an_error(tmp_path):
    _write_folds(tmp_path / "cv", [0, 1])
    stale = json.loads((tmp_path / "cv" / "fold-1.json").read_text())
    stale["macro_f1"] = stale.pop("f1_macro")  # a file written before the scores had one name
    (tmp_path / "cv" / "fold-1.json").write_text(json.dumps(stale))
    with pytest.raises(StageError, match=r"fold-1\.json: no 'f1_macro'; rerun `dvc repro crossval`"):
        crossval_summary.read_folds(tmp_path / "cv", [0, 1])


def test_the_summary_has_one_entry_per_concept():
    per_fold = {f: fold_metrics(f1_macro=0.5 + f / 10) for f in (0, 1)}
    summary = crossval_summary.summarize(per_fold)
    assert set(summary) == {"k", *metrics.NAMES, "loss"}
    assert summary["f1_macro"]["mean"] == pytest.approx(0.55)

"""One scorer: crossval (through the training loop's `evaluate`), evaluate and the gate report the
same names with the same numbers for the same predictions, and they are scikit-learn's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, precision_score, recall_score

from pipeline import metrics
from pipeline.training import evaluate as training_evaluate
from stages import evaluate as evaluate_stage

CLASSES = ["a", "b", "c", "d"]


class Fixed(torch.nn.Module):
    """Logits = the row itself, so the prediction of each row is chosen by hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def predictions() -> tuple[np.ndarray, np.ndarray]:
    """Class "d" has no rows and is never predicted: the case where "over the classes present" and
    "over every class" differ, as on a small fold."""
    actual = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 1, 0, 1, 1, 2, 0, 2, 1])
    return actual, predicted


def test_crossval_and_evaluate_paths_give_the_same_numbers():
    actual, predicted = predictions()
    logits = torch.nn.functional.one_hot(torch.from_numpy(predicted), len(CLASSES)).float()
    fold = training_evaluate(Fixed(), logits, torch.from_numpy(actual), len(CLASSES))  # what crossval writes
    test = evaluate_stage.score(actual, predicted, CLASSES).metrics  # what evaluate writes
    shared = set(metrics.NAMES)
    assert shared <= set(fold) and shared <= set(test)
    for name in metrics.NAMES:
        assert fold[name] == test[name], name
    # No second spelling of a concept (e.g. both macro_f1 and f1_macro) in either file.
    assert set(fold) - shared == {"loss"} and set(test) - shared == {"test_rows"}


def test_the_scores_are_scikit_learns_over_every_class():
    actual, predicted = predictions()
    got = metrics.scores(actual, predicted, len(CLASSES))
    every = {"labels": [0, 1, 2, 3], "average": "macro", "zero_division": 0}
    assert got["f1_macro"] == pytest.approx(f1_score(actual, predicted, **every))
    assert got["precision_macro"] == pytest.approx(precision_score(actual, predicted, **every))
    assert got["recall_macro"] == pytest.approx(recall_score(actual, predicted, **every))
    assert got["accuracy"] == pytest.approx(6 / 9)
    # The absent class counts 0 in the mean: the denominator is always the class count.
    assert got["f1_macro"] == pytest.approx(f1_score(actual, predicted, average="macro") * 3 / 4)


@pytest.mark.parametrize("seed", range(20))
def test_every_score_matches_scikit_learn_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 12))
    rows = int(rng.integers(1, 60))
    # few rows over many classes: absent classes, never-predicted classes and empty rows of the matrix
    actual = rng.integers(0, n_classes, rows)
    predicted = np.where(rng.random(rows) < 0.6, actual, rng.integers(0, n_classes, rows))
    labels = np.arange(n_classes)
    got = metrics.scores(actual, predicted, n_classes)
    p, r, f, _ = precision_recall_fscore_support(actual, predicted, labels=labels, average="macro", zero_division=0)
    assert got == pytest.approx(
        {"accuracy": accuracy_score(actual, predicted), "precision_macro": p, "recall_macro": r, "f1_macro": f},
        abs=1e-12,
    )
    names = [f"c{i}" for i in range(n_classes)]
    each = metrics.per_class(actual, predicted, names)
    p, r, f, support = precision_recall_fscore_support(actual, predicted, labels=labels, average=None, zero_division=0)
    for i, name in enumerate(names):
        assert each[name] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": support[i]}, abs=1e-12
        ), name


def test_a_label_outside_the_classes_is_an_error_not_a_wrong_score():
    with pytest.raises(ValueError, match="class indices 0..2"):
        metrics.scores(np.array([0, 1, 3]), np.array([0, 1, 2]), 3)


def test_scoring_does_not_import_scikit_learn():
    """Every process that scores (train, each crossval fold, evaluate, the gate) would pay
    scikit-learn's import (sklearn.metrics pulls in scipy.stats: over a second) for four ratios."""
    code = (
        "import sys; import pipeline.metrics, pipeline.training, stages.crossval, stages.evaluate; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

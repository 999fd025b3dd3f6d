"""The one scorer of class predictions: crossval, evaluate and the gate all report these numbers.

Torch-free and scikit-learn-free: numpy only, from one confusion matrix. Every stage process that
scores (train, each crossval fold, evaluate, the gate) would otherwise import `sklearn.metrics`,
which pulls in scipy.stats: about 1.3 s per process, a dozen times per run, for four ratios.
The definitions are scikit-learn's (`precision_recall_fscore_support`, `accuracy_score`), and
`tests/pipeline/test_metrics.py` checks them against scikit-learn on random predictions: over
every class of `data.classes` (the model's output order), with `zero_division=0`, so a class that
has no rows and is never predicted counts as 0, the macro mean always has the same denominator,
and a fold's number can be compared with the test split's.

The names are the ones `dvc metrics show` puts in columns; each concept has exactly one:
`accuracy`, `precision_macro`, `recall_macro`, `f1_macro`.
"""

from __future__ import annotations

import numpy as np

NAMES = ("accuracy", "precision_macro", "recall_macro", "f1_macro")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's `zero_division=0`)."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _per_class(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1, support and true positives of each class index 0..n_classes-1."""
    actual = np.asarray(actual, dtype=np.int64).ravel()
    predicted = np.asarray(predicted, dtype=np.int64).ravel()
    if actual.shape != predicted.shape:
        raise ValueError(f"{actual.size} labels but {predicted.size} predictions")
    for name, values in (("labels", actual), ("predictions", predicted)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} must be class indices 0..{n_classes - 1}")
    true_positive = np.bincount(actual[actual == predicted], minlength=n_classes).astype(np.float64)
    support = np.bincount(actual, minlength=n_classes).astype(np.float64)
    predicted_count = np.bincount(predicted, minlength=n_classes).astype(np.float64)
    precision = _ratio(true_positive, predicted_count)
    recall = _ratio(true_positive, support)
    f1 = _ratio(2 * true_positive, support + predicted_count)  # = 2PR/(P+R), 0 where both are 0
    return precision, recall, f1, support, true_positive


def scores(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 of class indices (0..n_classes-1)."""
    precision, recall, f1, support, true_positive = _per_class(actual, predicted, n_classes)
    rows = support.sum()  # every row counts once, in its class; the correct ones are the true positives
    return {
        "accuracy": float(true_positive.sum() / rows) if rows else 0.0,
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
    }


def per_class(actual: np.ndarray, predicted: np.ndarray, classes: list) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class, keyed by the class label as text."""
    precision, recall, f1, support, _ = _per_class(actual, predicted, len(classes))
    return {
        str(name): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }

"""The one scorer of class predictions: crossval, evaluate and the gate all report these numbers.

Torch-free (numpy and scikit-learn), so evaluate and the gate can score without importing torch.
Definitions are scikit-learn's, over every class of `data.classes` (the model's output order),
with `zero_division=0`: a class that has no rows and is never predicted counts as 0, so the macro
mean always has the same denominator and a fold's number can be compared with the test split's.

The names are the ones `dvc metrics show` puts in columns; each concept has exactly one:
`accuracy`, `precision_macro`, `recall_macro`, `f1_macro`.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

NAMES = ("accuracy", "precision_macro", "recall_macro", "f1_macro")


def scores(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 of class indices (0..n_classes-1)."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        actual, predicted, labels=np.arange(n_classes), average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(actual, predicted)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
    }


def per_class(actual: np.ndarray, predicted: np.ndarray, classes: list) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class, keyed by the class label as text."""
    precision, recall, f1, support = precision_recall_fscore_support(
        actual, predicted, labels=np.arange(len(classes)), average=None, zero_division=0
    )
    return {
        str(name): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }

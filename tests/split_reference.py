"""An independent computation of the split, to test both engines against (not the code under test).

The counts per class come from scikit-learn itself (two nested stratified `train_test_split`s and
`StratifiedKFold` over the training rows in row order); the keys from a plain-Python SplitMix64
(Steele, Lea and Flood, 2014; the published generator, on Python integers); the ranks from
Python's `sorted`. Slow but obvious: tens of thousands of rows take well under a second.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

MASK = 2**64 - 1


def splitmix64(seed: int, i: int) -> int:
    """Output number i (from 0) of SplitMix64 started at `seed`."""
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def signed(z: int) -> int:
    return z - 2**64 if z >= 2**63 else z


def sklearn_counts(labels: np.ndarray, val: float, test: float, seed: int) -> dict[str, Counter]:
    """Rows per class in each part of scikit-learn's stratified train/val/test split."""
    rows = np.arange(len(labels))
    held = val + test
    train, rest = train_test_split(rows, test_size=held, stratify=labels, random_state=seed)
    val_rows, test_rows = train_test_split(rest, test_size=test / held, stratify=labels[rest], random_state=seed)
    return {
        part: Counter(labels[ix].tolist()) for part, ix in (("train", train), ("val", val_rows), ("test", test_rows))
    }


def sklearn_fold_counts(train_labels: np.ndarray, k: int) -> dict:
    """Training rows per class in each of StratifiedKFold(k)'s folds, over the labels in row order."""
    counts: dict = defaultdict(lambda: [0] * k)
    for fold, (_, held) in enumerate(StratifiedKFold(k).split(train_labels, train_labels)):
        for label in train_labels[held].tolist():
            counts[label][fold] += 1
    return counts


def reference_split(labels: np.ndarray, val: float, test: float, seed: int, k: int) -> tuple[list[str], list[int]]:
    """Each row's split and fold (-1 outside train)."""
    counts = sklearn_counts(labels, val, test, seed)
    by_class: dict = defaultdict(list)
    for i, label in enumerate(labels.tolist()):
        by_class[label].append(i)
    split: list[str] = [""] * len(labels)
    ranked_train = {}
    for label, rows in by_class.items():
        ranked = sorted(rows, key=lambda i: signed(splitmix64(seed % 2**64, i)))
        n_test, n_val = counts["test"][label], counts["val"][label]
        for rank, i in enumerate(ranked):
            split[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        ranked_train[label] = ranked[n_test + n_val :]
    train_rows = [i for i in range(len(labels)) if split[i] == "train"]
    per_fold = sklearn_fold_counts(labels[train_rows], k)
    fold = [-1] * len(labels)
    for label, ranked in ranked_train.items():
        bounds = np.cumsum(per_fold[label])
        for position, i in enumerate(ranked):
            fold[i] = int(np.searchsorted(bounds, position, side="right"))
    return split, fold

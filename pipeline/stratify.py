"""Stratified shuffle splits and k-fold ids in NumPy, drawing exactly what scikit-learn draws.

`shuffle_split` is `sklearn.model_selection.train_test_split(range(n), test_size=..., stratify=y,
random_state=seed)` and `fold_ids` is `StratifiedKFold(k, shuffle=True, random_state=seed)`'s test
folds, step for step with the same `RandomState` draws (tests/pipeline/test_stratify.py compares
them with scikit-learn). Written out because scikit-learn's version builds Python lists of every
row index (about 60 bytes a row) and its import alone is ~75 MB, which dominated the split stage's
memory; and because the split of a data version should not change when scikit-learn is upgraded.

Row positions are int32 and class codes the smallest integer type that holds them (`class_codes`),
worked out a chunk of rows at a time: NumPy's own `unique(return_inverse=True)` and `argsort`
return int64, 8 bytes a row each, several times the uint8 label column they describe. The draws
depend only on the counts, never on these types.
"""

from __future__ import annotations

from math import ceil

import numpy as np

from pipeline.errors import StageError

CHUNK_ROWS = 1 << 16  # rows coded at a time: bounds NumPy's int64 temporaries to 512 KB
MASKED_CLASSES = 64  # up to this many classes, each class's rows are found by a pass over the codes


def approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Rows to draw from each class: proportional, rounded down, the rest to the largest
    remainders (ties broken at random); sklearn.utils.extmath._approximate_mode."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def shuffle_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the train and test rows: a stratified split holding out `test_fraction`."""
    n = len(y)
    if not 0 < test_fraction < 1:
        raise StageError(f"a split needs a held-out share between 0 and 1, got {test_fraction:g}")
    n_test = ceil(test_fraction * n)
    n_train = n - n_test
    classes, y_indices, class_counts, _ = class_codes(y)
    if min(n_train, n_test) < len(classes):
        raise StageError(
            f"{n} rows cannot be split {n_train}/{n_test} with every one of the {len(classes)} classes on both sides; "
            "add data or change split.val_fraction / split.test_fraction"
        )
    if len(classes) <= MASKED_CLASSES:
        class_indices = [positions(y_indices == i) for i in range(len(classes))]
    else:  # one pass over the rows per class would cost more than a sort
        order = np.argsort(y_indices, kind="stable")
        class_indices = np.split(order.astype(np.int32) if len(y) < 2**31 else order, np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = approximate_mode(class_counts, n_train, rng)
    t_i = approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        rows = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.append(rows[: n_i[i]])
        test.append(rows[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def fold_ids(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) each row is held out in, stratified by label."""
    rng = np.random.RandomState(seed)
    _, inverse, counts, first = class_codes(y)
    _, class_perm = np.unique(first, return_inverse=True)
    encoded = class_perm.astype(inverse.dtype)[inverse]  # classes numbered in order of first appearance
    n_classes = len(first)
    # np.sort(encoded)[i::k] counted per class, from the counts alone: the sorted codes are runs of
    # each class's count, and row j of the sorted array goes to fold j % k.
    runs = np.zeros(n_classes, np.int64)
    runs[class_perm] = counts
    starts = np.cumsum(runs) - runs
    allocation = np.asarray([[_count_congruent(starts[c], runs[c], i, k) for c in range(n_classes)] for i in range(k)])
    folds = np.empty(len(y), dtype=np.int8)
    for c in range(n_classes):
        for_class = np.arange(k).repeat(allocation[:, c])
        rng.shuffle(for_class)
        folds[encoded == c] = for_class
    return folds


def class_codes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`np.unique(y, return_index=True, return_inverse=True, return_counts=True)` in the order
    (classes, inverse, counts, first index), the inverse in the smallest integer type that numbers
    the classes (int8 for up to 127 classes) rather than int64."""
    classes = np.unique(y)
    kind = np.min_scalar_type(-max(len(classes), 1))
    codes = np.empty(len(y), kind)
    counts = np.zeros(len(classes), np.int64)
    first = np.full(len(classes), -1, np.int64)
    for start in range(0, len(y), CHUNK_ROWS):
        chunk = np.searchsorted(classes, y[start : start + CHUNK_ROWS])
        codes[start : start + CHUNK_ROWS] = chunk
        counts += np.bincount(chunk, minlength=len(classes))
        seen, at = np.unique(chunk, return_index=True)
        new = first[seen] < 0
        first[seen[new]] = at[new] + start
    return classes, codes, counts, first


def positions(mask: np.ndarray) -> np.ndarray:
    """`np.flatnonzero(mask)` as int32 where the positions fit (they do below 2**31 rows)."""
    found = np.flatnonzero(mask)
    return found.astype(np.int32) if len(mask) < 2**31 else found


def _count_congruent(start: int, length: int, i: int, k: int) -> int:
    """How many j in [start, start + length) have j % k == i."""
    first = start + (i - start) % k
    return max(0, -(-(start + length - first) // k))

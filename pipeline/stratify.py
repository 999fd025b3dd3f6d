"""The stratified split both engines compute the same way: per-class counts, then keyed ranks.

How many rows of each class go to test, val and train is what scikit-learn's stratified
`train_test_split` draws (train vs the rest, then the rest into val and test, each with
`random_state=split.seed`): `split_counts`, from the class counts alone. How many training rows
of each class each of the k folds holds is `StratifiedKFold`'s allocation over the training rows
in row order (classes in order of first appearance): `fold_counts`.

Which rows: each row's key is draw number `row` of SplitMix64 seeded with `split.seed` (a
bijection of the row's position, so no two rows tie: `position_keys`); within its class a row's
rank is its key's place among the class's keys (as signed 64-bit integers). The class's first
n_test ranks go to test, the next n_val to val, the rest to train, and the training ranks fill
folds 0..k-1 in order, each with its count (`assign`). A row's split depends on its label, its
position and the counts, never on the order the rows are processed in: NumPy sorts each class
here (`pipeline.engines.split_local`), Spark sorts them on its executors
(`pipeline.engines.spark_split`), and the same rows land in the same places.

Row positions are int32 and class codes the smallest integer type that holds them (`class_codes`),
worked out a chunk of rows at a time: NumPy's own `unique(return_inverse=True)` and `argsort`
return int64, 8 bytes a row each, several times the uint8 label column they describe.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from math import ceil

import numpy as np

from pipeline.errors import StageError
from pipeline.rowhash import _splitmix

CHUNK_ROWS = 1 << 16  # rows coded at a time: bounds NumPy's int64 temporaries to 512 KB
MASKED_CLASSES = 64  # up to this many classes, each class's rows are found by a pass over the codes
GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment
SPLITS = ("train", "val", "test")  # split codes 0, 1, 2


@dataclass(frozen=True)
class Allocation:
    """Rows per class (classes sorted) in each split, and per fold of the training rows."""

    classes: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    folds: np.ndarray  # (k, classes)

    def cuts(self, c: int) -> tuple[int, int, np.ndarray]:
        """Class c's first val rank, first train rank, and each fold's first training rank after the first."""
        return int(self.test[c]), int(self.test[c] + self.val[c]), np.cumsum(self.folds[:, c])[:-1]


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


def two_way(counts: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows per class kept and held out by a stratified `train_test_split(test_size=fraction,
    random_state=seed)` of rows with these class counts (classes absent here stay at 0)."""
    present = np.flatnonzero(counts)
    n = int(counts.sum())
    if not 0 < fraction < 1:
        raise StageError(f"a split needs a held-out share between 0 and 1, got {fraction:g}")
    n_test = ceil(fraction * n)
    n_train = n - n_test
    if min(n_train, n_test) < len(present):
        raise StageError(
            f"{n} rows cannot be split {n_train}/{n_test} with every one of the {len(present)} classes on both sides; "
            "add data or change split.val_fraction / split.test_fraction"
        )
    rng = np.random.RandomState(seed)
    kept = approximate_mode(counts[present], n_train, rng)
    held = approximate_mode(counts[present] - kept, n_test, rng)
    out = np.zeros((2, len(counts)), np.int64)
    out[0, present], out[1, present] = kept, held
    return out[0], out[1]


def allocate(classes: np.ndarray, counts: np.ndarray, val: float, test: float, seed: int) -> Allocation:
    """The split counts per class (no folds yet: they depend on which rows train)."""
    held = val + test
    train, rest = two_way(counts, held, seed)
    val_counts, test_counts = two_way(rest, test / held, seed)
    return Allocation(classes, train, val_counts, test_counts, np.zeros((0, len(classes)), np.int64))


def with_folds(allocation: Allocation, first_train_row: np.ndarray, k: int) -> Allocation:
    """`allocation` with StratifiedKFold(k)'s per-fold counts of each class's training rows;
    `first_train_row[c]`: the position of class c's first training row (the class order)."""
    order = np.argsort(first_train_row, kind="stable")  # classes by first appearance
    runs = allocation.train[order]
    starts = np.cumsum(runs) - runs
    folds = np.zeros((k, len(runs)), np.int64)
    for i in range(k):  # np.sort(encoded)[i::k] counted per class, from the runs alone
        for j, (start, length) in enumerate(zip(starts, runs, strict=True)):
            folds[i, order[j]] = _count_congruent(int(start), int(length), i, k)
    return Allocation(allocation.classes, allocation.train, allocation.val, allocation.test, folds)


def position_keys(rows: np.ndarray, seed: int) -> np.ndarray:
    """Each row position's key: draw number `row` (from 0) of SplitMix64 seeded with `seed`, as int64."""
    with np.errstate(over="ignore"):
        state = np.uint64(seed % 2**64) + (rows.astype(np.uint64) + np.uint64(1)) * GOLDEN
    return _splitmix(state).view(np.int64)


def ranks(keys: np.ndarray) -> np.ndarray:
    """Each key's place among `keys` (0 = the smallest), as int64."""
    out = np.empty(len(keys), np.int64)
    out[np.argsort(keys)] = np.arange(len(keys))
    return out


def assign(rank: np.ndarray, allocation: Allocation, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Split codes (0 train, 1 val, 2 test) and folds (-1 outside train) of class c's rows by rank."""
    first_val, first_train, fold_starts = allocation.cuts(c)
    split = np.where(rank < first_val, 2, np.where(rank < first_train, 1, 0)).astype(np.int8)
    fold = np.searchsorted(fold_starts, rank - first_train, side="right").astype(np.int8)
    return split, np.where(split == 0, fold, -1).astype(np.int8)


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


def class_positions(codes: np.ndarray, counts: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(class, its rows' positions ascending) for each class."""
    if len(counts) <= MASKED_CLASSES:
        for c in range(len(counts)):
            yield c, positions(codes == c)
        return
    order = np.argsort(codes, kind="stable")  # one pass over the rows per class would cost more than a sort
    order = order.astype(np.int32) if len(codes) < 2**31 else order
    yield from enumerate(np.split(order, np.cumsum(counts)[:-1]))


def positions(mask: np.ndarray) -> np.ndarray:
    """`np.flatnonzero(mask)` as int32 where the positions fit (they do below 2**31 rows)."""
    found = np.flatnonzero(mask)
    return found.astype(np.int32) if len(mask) < 2**31 else found


def _count_congruent(start: int, length: int, i: int, k: int) -> int:
    """How many j in [start, start + length) have j % k == i."""
    first = start + (i - start) % k
    return max(0, -(-(start + length - first) // k))

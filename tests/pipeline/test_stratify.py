"""The split both engines compute: scikit-learn's stratified counts, rows by their keyed rank in
their class; checked against an independent computation (tests/split_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
from split_reference import reference_split, signed, sklearn_counts, sklearn_fold_counts, splitmix64

from pipeline import stratify
from pipeline.errors import StageError
from pipeline.params import SplitParams
from stages import split

LABELS = {
    "balanced": np.repeat(np.arange(10), 30),
    "imbalanced": np.concatenate([np.zeros(500, int), np.ones(37, int), np.full(11, 2)]),
    "shuffled-strings": np.random.default_rng(3).choice(np.array(["cat", "dog", "eel"]), 1001),
    "uint8-digits": np.random.default_rng(5).integers(0, 10, 7001).astype(np.uint8),
}


def test_keys_are_splitmix64_draws():
    """SplitMix64 seeded with 0 starts 0xe220a8397b1dcdaf (the published generator's first output)."""
    assert splitmix64(0, 0) == 0xE220A8397B1DCDAF
    rows = np.array([0, 1, 2, 10**6, 2**40])
    for seed in (0, 42, -1, 2**63 + 5):
        expected = [signed(splitmix64(seed % 2**64, int(i))) for i in rows]
        assert stratify.position_keys(rows, seed).tolist() == expected


@pytest.mark.parametrize("name", LABELS)
@pytest.mark.parametrize(
    ("val", "test", "seed"), [(0.15, 0.15, 42), (0.2, 0.1, 0), (0.25, 0.25, 7), (0.1, 0.123, 2**31 - 1)]
)
def test_counts_per_class_are_scikit_learns(name, val, test, seed):
    y = LABELS[name]
    classes, _, counts, _ = stratify.class_codes(y)
    allocation = stratify.allocate(classes, counts, val, test, seed)
    expected = sklearn_counts(y, val, test, seed)
    for part in stratify.SPLITS:
        ours = dict(zip(classes.tolist(), getattr(allocation, part).tolist(), strict=True))
        assert ours == {c: expected[part][c] for c in classes.tolist()}, part


@pytest.mark.parametrize("name", LABELS)
@pytest.mark.parametrize(("k", "seed"), [(5, 42), (2, 0), (3, 11)])
def test_folds_are_stratified_k_fold_over_the_training_rows(name, k, seed):
    y = LABELS[name]
    assignment, _ = split.run(y, SplitParams(seed=seed, folds=list(range(k))))
    train = assignment["split"].to_numpy() == "train"
    assert set(assignment.loc[~train, "fold"]) == {-1}
    folds = assignment["fold"].to_numpy()[train]
    expected = sklearn_fold_counts(y[train], k)
    for label in np.unique(y).tolist():
        assert np.bincount(folds[y[train] == label], minlength=k).tolist() == expected[label]


def test_70k_rows_are_split_as_the_reference_computes():
    """70,000 imbalanced labels in random order: every row's split and fold is the reference's."""
    rng = np.random.default_rng(11)
    y = rng.choice(10, 70_000, p=np.linspace(1, 2, 10) / np.linspace(1, 2, 10).sum()).astype(np.uint8)
    params = SplitParams(seed=42, val_fraction=0.15, test_fraction=0.15, folds=[0, 1, 2, 3, 4])
    assignment, metrics = split.run(y, params)
    expected_split, expected_fold = reference_split(y, 0.15, 0.15, 42, 5)
    assert assignment["split"].astype(str).tolist() == expected_split
    assert assignment["fold"].tolist() == expected_fold
    assert metrics["rows"] == {"train": 49_000, "val": 10_500, "test": 10_500}


def test_the_assignment_does_not_depend_on_the_order_classes_are_worked_through(monkeypatch):
    y = LABELS["uint8-digits"]
    params = SplitParams(seed=3)
    masked, _ = split.run(y, params)
    monkeypatch.setattr(stratify, "MASKED_CLASSES", 1)  # one sort instead of a pass per class
    sorted_, _ = split.run(y, params)
    assert masked.equals(sorted_)


def test_a_split_that_would_leave_a_class_out_is_a_clear_error():
    with pytest.raises(StageError, match="every one of the 10 classes on both sides"):
        split.run(np.repeat(np.arange(10), 7), SplitParams(val_fraction=0.05, test_fraction=0.05, folds=[0, 1]))


@pytest.mark.parametrize("name", LABELS)
def test_class_codes_are_numpy_unique_in_small_types(name, monkeypatch):
    monkeypatch.setattr(stratify, "CHUNK_ROWS", 97)  # many chunks: a class first seen in a later one
    y = LABELS[name]
    classes, codes, counts, first = stratify.class_codes(y)
    expected = np.unique(y, return_index=True, return_inverse=True, return_counts=True)
    for ours, theirs in zip((classes, first, codes, counts), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert codes.dtype == np.int8  # not NumPy's int64: 8 bytes a row for a 1-byte label

"""The stratified split draws exactly what scikit-learn's train_test_split and StratifiedKFold draw."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, train_test_split

from pipeline import stratify
from pipeline.errors import StageError

LABELS = {
    "balanced": np.repeat(np.arange(10), 30),
    "imbalanced": np.concatenate([np.zeros(500, int), np.ones(37, int), np.full(11, 2)]),
    "shuffled-strings": np.random.default_rng(3).choice(np.array(["cat", "dog", "eel"]), 1001),
    "uint8-digits": np.random.default_rng(5).integers(0, 10, 7001).astype(np.uint8),
}


@pytest.mark.parametrize("name", LABELS)
@pytest.mark.parametrize(("test_fraction", "seed"), [(0.3, 42), (0.15, 0), (0.5, 7), (0.123, 2**31 - 1)])
def test_shuffle_split_is_train_test_split(name, test_fraction, seed):
    y = LABELS[name]
    expected = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=seed)
    for ours, theirs in zip(stratify.shuffle_split(y, test_fraction, seed), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", LABELS)
@pytest.mark.parametrize(("k", "seed"), [(5, 42), (2, 0), (3, 11)])
def test_fold_ids_are_stratified_k_fold(name, k, seed):
    y = LABELS[name]
    expected = np.full(len(y), -1)
    for i, (_, held_out) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y)):
        expected[held_out] = i
    np.testing.assert_array_equal(stratify.fold_ids(y, k, seed), expected)


def test_a_split_that_would_leave_a_class_out_is_a_clear_error():
    with pytest.raises(StageError, match="every one of the 10 classes on both sides"):
        stratify.shuffle_split(np.repeat(np.arange(10), 3), 0.1, 0)


@pytest.mark.parametrize("name", LABELS)
def test_class_codes_are_numpy_unique_in_small_types(name, monkeypatch):
    monkeypatch.setattr(stratify, "CHUNK_ROWS", 97)  # many chunks: a class first seen in a later one
    y = LABELS[name]
    classes, codes, counts, first = stratify.class_codes(y)
    expected = np.unique(y, return_index=True, return_inverse=True, return_counts=True)
    for ours, theirs in zip((classes, first, codes, counts), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert codes.dtype == np.int8  # not NumPy's int64: 8 bytes a row for a 1-byte label


@pytest.mark.parametrize("masked", [64, 1])  # a pass per class, or one sort (many classes)
def test_split_positions_are_int32_and_unchanged(masked, monkeypatch):
    monkeypatch.setattr(stratify, "MASKED_CLASSES", masked)
    y = LABELS["imbalanced"]
    expected = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=5)
    for ours, theirs in zip(stratify.shuffle_split(y, 0.2, 5), expected, strict=True):
        assert ours.dtype == np.int32
        np.testing.assert_array_equal(ours, theirs)

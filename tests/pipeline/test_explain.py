"""Integrated gradients as the explain stage computes it (Captum on the plain model), checked by
what integrated gradients must satisfy, with our own forward passes rather than Captum's numbers:

- on a model that is linear in its input the integral is exact, so each attribution is
  (x - baseline) x weight of the explained class, to float32 rounding;
- completeness: on nonlinear models (a small CNN on image rows, an MLP on tabular rows, each fitted
  a few steps) the attributions of a row sum to F(x) - F(baseline) of the explained logit, up to
  the quadrature error, which shrinks as n_steps grows.

Tolerance, at the stage's default 32 steps: |sum(attributions) - (F(x) - F(b))| <= 2% of
sum(|attributions|) + 1e-3. The error is measured against the attributions' own size, not the
change F(x) - F(b): positive and negative attributions can cancel to a change near zero, and
against that any quadrature error looks huge. Along the path a ReLU network's gradient is
piecewise constant and each kink between two of the n points is mis-weighted by at most one
step's share, so the error is a small fraction of the attributions' size that halves as n doubles.
Measured on the CNN here: at most 0.7% at 32 steps (0.3% at 64, 0.06% at 256), so 2% leaves
room for other seeds while an attribution of the wrong class, baseline or row misses by the
size of the attributions themselves (test_a_wrong_target_breaks_completeness).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import tiny_image_table

from pipeline import explain
from pipeline.models import CNNConfig, MLPConfig, build_model, set_input_scale

CLASSES = tuple(range(10))
DEFAULT_STEPS = 32
SHARE_TOL, ABS_TOL = 0.02, 1e-3  # of sum(|attributions|), see above


def image_rows(n: int = 40) -> np.ndarray:
    return tiny_image_table(rows_per_class=4).drop(columns="label").to_numpy(np.float32)[:n]


def fitted(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int = 40) -> torch.nn.Module:
    """A few full-batch Adam steps, so the logits move as a trained model's do (random weights
    barely move them, and a completeness check on near-zero changes proves little)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    return model.eval()


@functools.cache
def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(CNNConfig(64, CLASSES, (8, 8), 0.0, channels=(8,), hidden=(32,)))
    set_input_scale(model, torch.zeros(64), torch.full((64,), 1 / 16))
    table = tiny_image_table(rows_per_class=10, seed=1)
    return fitted(model, table.drop(columns="label").to_numpy(np.float32), table["label"].to_numpy())


def tabular_mlp(rows: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(1)
    model = build_model(MLPConfig(rows.shape[1], (0, 1), None, 0.0, hidden=(16, 16)))
    set_input_scale(model, torch.from_numpy(rows.mean(axis=0)), torch.from_numpy(1 / (rows.std(axis=0) + 1e-6)))
    labels = (rows[:, 0] + rows[:, 1] > rows[:, 2] + rows[:, 3]).astype(np.int64)  # a rule to learn
    return fitted(model, rows, labels)


def our_gap(model: torch.nn.Module, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """F(x) - F(baseline) of each row's target logit, from plain forward passes."""
    with torch.no_grad():
        fx = model(torch.from_numpy(x)).numpy()
        fb = model(explain.baseline_of(model)[None, :]).numpy()[0]
    return fx[np.arange(len(x)), target].astype(np.float64) - fb[target]


def completeness_error(model, x, target, n_steps) -> tuple[np.ndarray, np.ndarray, explain.Attributions]:
    found = explain.integrated_gradients(model, x, target, n_steps)
    gap = our_gap(model, x, target)
    return found.values.sum(axis=1, dtype=np.float64) - gap, gap, found


def test_on_a_linear_model_each_attribution_is_input_change_times_weight():
    torch.manual_seed(0)
    model = build_model(MLPConfig(64, CLASSES, (8, 8), 0.0, hidden=()))  # Scale then one Linear layer
    offset = torch.full((64,), 3.0)
    set_input_scale(model, offset, torch.full((64,), 0.25))
    x = image_rows(12)
    target = np.arange(12) % 10
    found = explain.integrated_gradients(model.eval(), x, target, n_steps=4)
    weight = model.head[-1].weight.detach().numpy() * 0.25  # d logit / d raw input, through the scaling
    expected = (x - offset.numpy()) * weight[target]
    np.testing.assert_allclose(found.values, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(found.target, target)


@pytest.mark.parametrize("kind", ["image cnn", "tabular mlp"])
def test_attributions_add_up_to_the_logit_change_from_the_baseline(kind):
    if kind == "image cnn":
        x = image_rows()
        model = cnn()
    else:
        x = np.random.default_rng(0).normal(5.0, 2.0, size=(40, 30)).astype(np.float32)
        model = tabular_mlp(x)
    target = np.arange(len(x)) % (10 if kind == "image cnn" else 2)
    error, gap, found = completeness_error(model, x, target, DEFAULT_STEPS)
    assert np.abs(gap).max() > 0.1  # the rows really move the logits: a test that can fail
    size = np.abs(found.values).sum(axis=1)
    assert np.all(np.abs(error) <= SHARE_TOL * size + ABS_TOL), (np.abs(error) / size).max()
    # Captum's own convergence delta (what the report shows) is the same error, and the stage's gap ours
    np.testing.assert_allclose(found.delta, error, atol=1e-4)
    np.testing.assert_allclose(found.gap, gap, rtol=1e-5, atol=1e-5)


def test_the_completeness_error_shrinks_with_more_steps():
    x, model = image_rows(20), cnn()
    target = np.arange(20) % 10
    coarse = np.abs(completeness_error(model, x, target, 2)[0]).mean()
    fine = np.abs(completeness_error(model, x, target, 128)[0]).mean()
    assert fine < coarse


def test_a_wrong_target_breaks_completeness():
    """The check has teeth: the attributions of one class do not add up to another class's change."""
    x, model = image_rows(20), cnn()
    target = np.arange(20) % 10
    found = explain.integrated_gradients(model, x, target, DEFAULT_STEPS)
    other = our_gap(model, x, (target + 1) % 10)
    miss = np.abs(found.values.sum(axis=1) - other)
    assert np.mean(miss > SHARE_TOL * np.abs(found.values).sum(axis=1) + ABS_TOL) > 0.5


def test_the_baseline_is_what_the_scaling_maps_to_zero():
    x = np.random.default_rng(0).normal(5.0, 2.0, size=(10, 30)).astype(np.float32)
    model = tabular_mlp(x)
    np.testing.assert_allclose(explain.baseline_of(model).numpy(), x.mean(axis=0), rtol=1e-6)


def test_confused_pairs_rank_by_count_and_show_confident_mistakes_first():
    actual = np.array([3, 3, 3, 5, 5, 8, 1, 1, 2])
    predicted = np.array([8, 8, 5, 3, 3, 3, 1, 7, 2])
    confidence = np.array([0.6, 0.9, 0.5, 0.7, 0.8, 0.99, 0.9, 0.55, 0.9])
    pairs = explain.confused_pairs(actual, predicted, confidence, top=3, per_pair=1)
    assert [(p.actual, p.predicted, p.count) for p in pairs] == [(3, 8, 2), (5, 3, 2), (1, 7, 1)]
    assert pairs[0].rows == (1,) and pairs[1].rows == (4,)
    assert explain.confused_pairs(actual, actual, confidence, top=3, per_pair=2) == []


def test_row_picks_per_class_and_evenly_spaced():
    labels = np.array([0, 1, 0, 2, 0, 1])
    assert explain.rows_per_class(labels, 4, 2).tolist() == [0, 2, 1, 5, 3]  # class 3 has none
    assert explain.evenly_spaced(10, 3).tolist() == [0, 4, 9]  # ends included
    assert explain.evenly_spaced(3, 500).tolist() == [0, 1, 2]

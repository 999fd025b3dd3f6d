"""Why the model answers what it does: integrated-gradients attributions (Captum) and the class
pairs it confuses, computed on the trained PyTorch model.

Integrated gradients (Sundararajan et al., 2017) splits the change of one output, a class's logit
F, between the input features: feature i gets (x_i - b_i) times the mean of dF/dx_i along the
straight path from a baseline b to the row x. Exactly integrated, the attributions add up to
F(x) - F(b) (completeness); the `n_steps`-point quadrature leaves an error, the convergence delta,
that comes back with every row so a reader can tell how far to trust a map.

The baseline is the row the model's own input scaling maps to zero (`scale.offset`): a blank image
for image rows (data.value_range's minimum), the mean training row for tabular rows. A map then
answers "what in this row, compared with nothing (or an average row), moved the score".

Captum runs on the plain module that `load_model` rebuilds from the model file, never on a module
wrapped for training: Opacus' per-sample-gradient hooks refuse the extra backward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

BATCH_ROWS = 128  # rows per Captum call: with n_steps points each, one forward pass sees rows x steps inputs
INTERNAL_ROWS = 4096  # path points per forward pass inside Captum: bounds memory on large images


@dataclass(frozen=True)
class Attributions:
    """Integrated gradients of one target class per row."""

    values: np.ndarray  # [rows, n_features], float32: each feature's share of the logit change
    target: np.ndarray  # [rows] class index whose logit is explained
    gap: np.ndarray  # [rows] F(x) - F(baseline) of that logit, from two plain forward passes
    delta: np.ndarray  # [rows] Captum's completeness error: sum(values) - gap, up to float error

    def importance(self) -> np.ndarray:
        """Mean absolute attribution per feature over the rows."""
        return np.abs(self.values).mean(axis=0)


@dataclass(frozen=True)
class ConfusedPair:
    actual: int  # class index
    predicted: int  # class index
    count: int  # test rows of `actual` predicted as `predicted`
    rows: tuple[int, ...]  # positions in the test rows, most confidently wrong first


def baseline_of(model: nn.Module) -> torch.Tensor:
    """The raw row the model's input scaling maps to zero: `[n_features]`."""
    return model.get_submodule("scale").offset.detach().clone()


def logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Logits `[rows, n_classes]` of float32 rows, in batches, without gradients."""
    with torch.no_grad():
        parts = [
            model(torch.from_numpy(np.ascontiguousarray(x[i : i + BATCH_ROWS], np.float32))).numpy()
            for i in range(0, len(x), BATCH_ROWS)
        ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def integrated_gradients(model: nn.Module, x: np.ndarray, target: np.ndarray, n_steps: int) -> Attributions:
    """Attributions of `target[i]`'s logit for each row `x[i]` against `baseline_of(model)`."""
    from captum.attr import IntegratedGradients

    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # gradients with respect to the inputs only
    baseline = baseline_of(model)
    method = IntegratedGradients(model)
    values, deltas = [], []
    for start in range(0, len(x), BATCH_ROWS):
        rows = torch.from_numpy(np.ascontiguousarray(x[start : start + BATCH_ROWS], np.float32))
        attribution, delta = method.attribute(
            rows,
            baselines=baseline.expand_as(rows).contiguous(),
            target=torch.from_numpy(target[start : start + BATCH_ROWS].astype(np.int64)),
            n_steps=n_steps,
            internal_batch_size=max(n_steps, INTERNAL_ROWS // n_steps * n_steps),
            return_convergence_delta=True,
        )
        values.append(attribution.detach().numpy())
        deltas.append(delta.detach().numpy())
    picked = np.arange(len(x))
    gap = logits(model, x)[picked, target] - logits(model, baseline.numpy()[None, :])[0, target]
    return Attributions(
        np.concatenate(values).astype(np.float32),
        target.astype(np.int64),
        gap.astype(np.float64),
        np.concatenate(deltas).astype(np.float64),
    )


def rows_per_class(labels: np.ndarray, n_classes: int, count: int) -> np.ndarray:
    """The first `count` test rows of each class, class by class (fewer where a class has fewer)."""
    return np.concatenate([np.flatnonzero(labels == k)[:count] for k in range(n_classes)]).astype(np.int64)


def evenly_spaced(n: int, count: int) -> np.ndarray:
    """Up to `count` positions spread evenly over `n` rows."""
    return np.unique(np.linspace(0, n - 1, num=min(n, count)).round().astype(np.int64)) if n else np.zeros(0, np.int64)


def confused_pairs(
    actual: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, top: int, per_pair: int
) -> list[ConfusedPair]:
    """The `top` (actual, predicted) pairs with the most misclassified rows, ties by class order;
    each with up to `per_pair` of its rows, the most confident mistakes first."""
    wrong = np.flatnonzero(actual != predicted)
    counts: dict[tuple[int, int], list[int]] = {}
    for i in wrong:
        counts.setdefault((int(actual[i]), int(predicted[i])), []).append(int(i))
    ranked = sorted(counts.items(), key=lambda item: (-len(item[1]), item[0]))[:top]
    pairs = []
    for (a, p), rows in ranked:
        ordered: Sequence[int] = sorted(rows, key=lambda i: (-float(confidence[i]), i))
        pairs.append(ConfusedPair(a, p, len(rows), tuple(ordered[:per_pair])))
    return pairs

"""The input scale a model learns with: raw rows in, roughly unit-scale features inside the model
(`pipeline.models.set_input_scale`), so the exported graph takes raw rows."""

from __future__ import annotations

import numpy as np

from pipeline.params import DataParams

STD_FLOOR = 1e-6  # a tabular feature with a smaller spread is left unscaled (constant in training)


def input_scale(x: np.ndarray, data: DataParams) -> tuple[np.ndarray, np.ndarray]:
    """(offset, factor) per feature so that (x - offset) * factor is roughly unit scale.

    Images use one range for every pixel (data.value_range, else the training rows' min/max), so a
    pixel that is always blank in training is not blown up; tabular rows are standardised.
    """
    n = x.shape[1]
    if data.image_shape is not None:
        lo, hi = data.value_range if data.value_range is not None else (float(x.min()), float(x.max()))
        span = hi - lo if hi > lo else 1.0
        return np.full(n, lo, np.float32), np.full(n, 1.0 / span, np.float32)
    mean, std = column_moments(x)
    return mean.astype(np.float32), np.where(std > STD_FLOOR, 1.0 / np.maximum(std, STD_FLOOR), 1.0).astype(np.float32)


def column_moments(x: np.ndarray, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) standard deviation, accumulated in float64 over chunks of
    rows, so that no float64 copy of the whole table is made."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].astype(np.float64)
        total += part.sum(axis=0)
        squares += np.square(part).sum(axis=0)
    mean = total / len(x)
    return mean, np.sqrt(np.maximum(squares / len(x) - np.square(mean), 0.0))

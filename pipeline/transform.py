"""The fitted transform of a mixed table: raw rows (numbers with gaps, category strings) to the
float32 features the model takes. Torch-free: numpy only.

It is fitted on training rows only (train: the train split; crossval: the fold's training rows):

- a numeric column's gaps are filled with its training median; with policy `indicator` a 0/1
  "was missing" feature follows the numeric values;
- a categorical column becomes a one-hot block over its training vocabulary (sorted) plus one
  reserved "unknown" slot, last, for any value training never saw; a gap is filled with the most
  frequent training value (and flagged, with `indicator`).

A gap at serving time is filled the same way whatever the column's policy: training never saw
one in a `quarantine` column, and an answer beats an error. Scaling stays inside the model (its
`Scale` layer, fitted on the same training rows). The transform is plain data (lists of str,
float, bool), so a model file holding it still loads with `torch.load(..., weights_only=True)`;
export writes the same arithmetic into the ONNX graph with ONNX-ML operators.

Layout of the encoded row: [numeric values] [numeric indicators] [one-hot blocks] [categorical
indicators], each in table order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.contract import FeatureContract
from pipeline.errors import StageError

FORMAT = "triton-retrain/transform@1"
UNKNOWN = "<unknown>"  # the name of the reserved slot in feature names (never matched as a value)


@dataclass(frozen=True)
class RawRows:
    """Rows as the table holds them: numeric features float32 `[n, n_numeric]` (NaN = missing),
    categorical ones as text `[n, n_categorical]` (object; None = missing), labels as class indices."""

    numeric: np.ndarray
    categorical: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, which: np.ndarray) -> RawRows:
        return RawRows(self.numeric[which], self.categorical[which], self.y[which])


def fit(rows: RawRows, contracts: list[FeatureContract]) -> dict[str, Any]:
    """The transform of `rows` (training rows only) under the columns' contract."""
    numeric = [c for c in contracts if c.kind == "numeric"]
    categorical = [c for c in contracts if c.kind == "categorical"]
    out: dict[str, Any] = {"format": FORMAT, "numeric": [], "categorical": []}
    for j, c in enumerate(numeric):
        column = rows.numeric[:, j]
        present = column[~np.isnan(column)]
        out["numeric"].append(
            {
                "name": c.name,
                "fill": float(np.median(present)) if present.size else 0.0,
                "indicator": c.missing == "indicator",
            }
        )
    for j, c in enumerate(categorical):
        counts = Counter(v for v in rows.categorical[:, j] if v is not None)
        vocabulary = sorted(counts)
        # Most frequent; ties go to the first in vocabulary order, so a refit gives the same value.
        fill = max(vocabulary, key=lambda v: (counts[v], -vocabulary.index(v))) if vocabulary else None
        out["categorical"].append(
            {"name": c.name, "vocabulary": vocabulary, "fill": fill, "indicator": c.missing == "indicator"}
        )
    return out


def check(transform: Any) -> dict[str, Any]:
    """A transform read from a file, checked to be one this code wrote."""
    if not isinstance(transform, dict) or transform.get("format") != FORMAT:
        raise StageError(f"the model file's transform is not {FORMAT!r}; retrain")
    return transform


def numeric_names(transform: dict[str, Any]) -> list[str]:
    return [c["name"] for c in transform["numeric"]]


def categorical_names(transform: dict[str, Any]) -> list[str]:
    return [c["name"] for c in transform["categorical"]]


def feature_names(transform: dict[str, Any]) -> list[str]:
    """The encoded row's features, in order (for the model card)."""
    numeric, categorical = transform["numeric"], transform["categorical"]
    return [
        *(c["name"] for c in numeric),
        *(f"{c['name']}_missing" for c in numeric if c["indicator"]),
        *(f"{c['name']}={v}" for c in categorical for v in [*c["vocabulary"], UNKNOWN]),
        *(f"{c['name']}_missing" for c in categorical if c["indicator"]),
    ]


def width(transform: dict[str, Any]) -> int:
    return len(feature_names(transform))


def category_index(values: np.ndarray, column: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(slot of each value: its vocabulary position or the unknown slot; whether it was missing)."""
    vocabulary = column["vocabulary"]
    lookup = {v: i for i, v in enumerate(vocabulary)}
    unknown = len(vocabulary)
    missing = np.array([v is None or v == "" for v in values], bool)
    fill = lookup.get(column["fill"], unknown)
    index = np.array([fill if m else lookup.get(v, unknown) for v, m in zip(values, missing, strict=True)], np.int64)
    return index, missing


def encode(transform: dict[str, Any], rows: RawRows) -> np.ndarray:
    """The float32 features `[n, width]` of raw rows."""
    numeric = np.asarray(rows.numeric, np.float32)
    n = len(numeric)
    gaps = np.isnan(numeric)
    fills = np.array([c["fill"] for c in transform["numeric"]], np.float32)
    parts = [np.where(gaps, fills, numeric)]
    parts += [gaps[:, [j]].astype(np.float32) for j, c in enumerate(transform["numeric"]) if c["indicator"]]
    flags = []
    for j, column in enumerate(transform["categorical"]):
        index, missing = category_index(rows.categorical[:, j], column)
        block = np.zeros((n, len(column["vocabulary"]) + 1), np.float32)
        block[np.arange(n), index] = 1.0
        parts.append(block)
        if column["indicator"]:
            flags.append(missing[:, None].astype(np.float32))
    return np.ascontiguousarray(np.concatenate([*parts, *flags], axis=1), dtype=np.float32)

"""The raw table's columns as the contract sees them, and the per-row profile the row checks read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.contract import FeatureContract, category_values, feature_contracts
from pipeline.numbers import Unparsed, shown
from pipeline.params import DataParams


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the raw table as the contract sees it."""

    name: str
    role: Literal["label", "feature", "other"]
    # What the row profile does with it; "other" = a type the contract cannot take (a wrong type).
    kind: Literal["numeric", "categorical", "other"]
    contract: FeatureContract | None = None  # features only


def describe_columns(schema: pa.Schema, contract: DataParams) -> list[ColumnSpec]:
    features = {c.name: c for c in feature_contracts(schema, contract)}

    def kind(t: pa.DataType, feature: FeatureContract | None) -> Literal["numeric", "categorical", "other"]:
        if feature is not None and feature.kind == "categorical":
            return "categorical"  # text, or numbers used as codes (read as their text)
        numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
        return "numeric" if numeric else "other"

    return [
        ColumnSpec(
            f.name,
            "label" if f.name == contract.label else "feature" if f.name in features else "other",
            kind(f.type, features.get(f.name)),
            features.get(f.name),
        )
        for f in schema
    ]


def profile_batch(
    batch: pa.RecordBatch,
    label: str,
    features: list[str],
    gaps_allowed: frozenset[str] = frozenset(),
    categorical: frozenset[str] = frozenset(),
    unparsed: dict[str, Unparsed] | None = None,
) -> pd.DataFrame:
    """One row per row of the batch: label, null count, min, max, non-finite count, and the first
    of its values that is not a number (`unparsed`, as `px_5: "oops"`; None for most rows).

    Column by column, so no batch-sized float copy exists; integer columns are used as they are
    (no NaN or inf possible), with min and max as the doubles just below and above an integer that
    has no exact double (above 2**53), so the range checks are exact. A gap in a column of
    `gaps_allowed` (its missing-value policy fills it) is not counted, nor is a value that was not
    a number (its own check quarantines the row); `categorical` columns count only their gaps."""
    unparsed = unparsed or {}
    n = batch.num_rows
    nulls = np.zeros(n, np.int32)
    nonfinite = np.zeros(n, np.int32)
    lo = np.full(n, np.inf, np.float64)
    hi = np.full(n, -np.inf, np.float64)
    words = np.full(n, None, object)
    for name in features:
        column = batch.column(name)
        if name in unparsed:
            bad = unparsed[name]
            free = pd.isna(words[bad.rows])  # rows whose first bad value this is
            words[bad.rows[free]] = [shown(name, t) for t, first in zip(bad.texts, free, strict=True) if first]
        if name in categorical:
            if name not in gaps_allowed:
                nulls += pd.isna(category_values(column)).astype(np.int32)
            continue
        if pa.types.is_integer(column.type):
            gap = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
            down, up = float_bounds(column.fill_null(0).to_numpy() if gap is not None else column.to_numpy())
            if gap is not None:
                if name not in gaps_allowed:
                    nulls += gap
                down, up = np.where(gap, np.inf, down), np.where(gap, -np.inf, up)
            np.minimum(lo, down, out=lo)
            np.maximum(hi, up, out=hi)
            continue
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls are NaN
        isnan, isinf = np.isnan(values), np.isinf(values)
        if name not in gaps_allowed:
            counted = isnan if name not in unparsed else isnan & ~_mask(n, unparsed[name].rows)
            nulls += counted
        nonfinite += isinf
        bad = isnan | isinf
        np.minimum(lo, np.where(bad, np.inf, values), out=lo)
        np.maximum(hi, np.where(bad, -np.inf, values), out=hi)
    return pd.DataFrame(
        {
            "label": batch.column(label).to_numpy(zero_copy_only=False),
            "unparsed": words,
            "null_features": nulls,
            "nonfinite_features": nonfinite,
            "feature_min": lo,
            "feature_max": hi,
        }
    )


def float_bounds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Doubles with `down <= values <= up`, each the nearest such: the values themselves up to
    2**53, the neighbouring doubles of an integer above that (an int64 id, a timestamp in ns)."""
    near = values.astype(np.float64)
    if values.dtype.kind not in "iu" or len(values) == 0 or (values.min() >= -(2**53) and values.max() <= 2**53):
        return near, near
    limit = float(np.iinfo(values.dtype).max)  # 2**63 (2**64 for uint64): a double no value reaches
    inside = near < limit
    back = np.where(inside, near, 0).astype(values.dtype)  # exact: such a double is an integer
    below = inside & (back < values)
    above = ~inside | (back > values)
    return np.where(above, np.nextafter(near, -np.inf), near), np.where(below, np.nextafter(near, np.inf), near)


def _mask(n: int, rows: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, bool)
    mask[rows] = True
    return mask


def expected_features(features: list[str], contract: DataParams) -> list[str]:
    """The feature names the contract expects, given the ones the table has.

    Image rows are numbered pixels (`px_0`..`px_63`): a missing or renamed one shifts every later
    pixel, so when every feature is the prefix plus a number the full numbered set is expected
    (numbered from 0, or from 1 when that fits the table better). Otherwise the contract names no
    columns and the table's own features are expected.
    """
    n = contract.n_features
    pattern = re.compile(re.escape(contract.feature_prefix) + r"(\d+)")
    numbers = [m and int(m.group(1)) for m in map(pattern.fullmatch, features)]
    if n is None or not features or None in numbers:
        return features
    present = set(features)

    def numbered(base: int) -> list[str]:
        return [f"{contract.feature_prefix}{i}" for i in range(base, base + n)]

    return min(numbered(0), numbered(1), key=lambda names: len(present.symmetric_difference(names)))

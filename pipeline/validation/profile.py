"""The raw table's columns as the contract sees them, and the per-row profile the row checks read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.contract import FeatureContract, category_values, feature_contracts
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
) -> pd.DataFrame:
    """One row per row of the batch: label, null count, min, max, non-finite count.

    Column by column, so no batch-sized float copy exists; integer columns without nulls are used
    as they are (no NaN or inf possible). A gap in a column of `gaps_allowed` (its missing-value
    policy fills it) is not counted; `categorical` columns count only their gaps."""
    n = batch.num_rows
    nulls = np.zeros(n, np.int32)
    nonfinite = np.zeros(n, np.int32)
    lo = np.full(n, np.inf, np.float64)
    hi = np.full(n, -np.inf, np.float64)
    for name in features:
        column = batch.column(name)
        if name in categorical:
            if name not in gaps_allowed:
                nulls += pd.isna(category_values(column)).astype(np.int32)
            continue
        if column.null_count == 0 and pa.types.is_integer(column.type):
            values = column.to_numpy()
            np.minimum(lo, values, out=lo)
            np.maximum(hi, values, out=hi)
            continue
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls are NaN
        isnan, isinf = np.isnan(values), np.isinf(values)
        if name not in gaps_allowed:
            nulls += isnan
        nonfinite += isinf
        bad = isnan | isinf
        np.minimum(lo, np.where(bad, np.inf, values), out=lo)
        np.maximum(hi, np.where(bad, -np.inf, values), out=hi)
    return pd.DataFrame(
        {
            "label": batch.column(label).to_numpy(zero_copy_only=False),
            "null_features": nulls,
            "nonfinite_features": nonfinite,
            "feature_min": lo,
            "feature_max": hi,
        }
    )


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

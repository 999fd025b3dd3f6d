"""Row checks: what each quarantine reason says, and the one-line reason of a quarantined row."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.numbers import shown
from pipeline.params import DataParams
from pipeline.tables import feature_columns

ROW_REASONS = {
    "label_not_null": "missing label",
    "label_in_set": "unknown label",
    "values_are_numbers": "not a number",
    "no_null_features": "missing feature value",
    "finite_features": "non-finite feature value",
    "features_above_min": "feature value below range",
    "features_below_max": "feature value above range",
    "not_duplicate": "exact duplicate of an earlier row",
}
CATEGORY_CHECK = "categories:"  # + column name: a row-level check of one categorical column's values
CATEGORY_REASON = "undeclared category"


def reason_text(name: str) -> str:
    """The quarantine reason of a row-level check."""
    return CATEGORY_REASON if name.startswith(CATEGORY_CHECK) else ROW_REASONS[name]


def is_row_check(name: str) -> bool:
    return name in ROW_REASONS or name.startswith(CATEGORY_CHECK)


def row_reason(
    table: pd.DataFrame, row: int, failed: list[str], contract: DataParams, unparsed: dict[str, str] | None = None
) -> str:
    """A readable reason for one quarantined row, naming a column and its value. `unparsed`: the
    row's values that are not numbers, by column (gaps in `table`, not missing values)."""
    unparsed = unparsed or {}
    features = feature_columns(list(table.columns), contract)
    text_columns = {c for c in features if _is_categorical(table, c, contract)}
    gaps_allowed = {c for c in features if _policy(c, contract) != "quarantine"} | set(unparsed)
    values = table.iloc[row]
    parts = []
    for name in failed:
        text = reason_text(name)
        if name == "values_are_numbers":
            column = next(c for c in features if c in unparsed)
            parts.append(f"{shown(column, unparsed[column])} is not a number")
            continue
        if name.startswith(CATEGORY_CHECK):
            column = name[len(CATEGORY_CHECK) :]
            text += f": {column}={values[column]!r} (not in data.columns.{column}.categories)"
        elif name == "no_null_features" and text_columns:
            gaps = [c for c in features if c not in gaps_allowed and (pd.isna(values[c]) or values[c] == "")]
            if gaps:
                text += f": {gaps[0]} is empty" if gaps[0] in text_columns else f": {gaps[0]}=nan"
        elif name == "label_in_set":
            label = table[contract.label].iloc[row]  # from its column: a row of mixed types would widen it
            text += f" {label.item() if isinstance(label, np.generic) else label!r}"
        elif name in ("no_null_features", "finite_features", "features_above_min", "features_below_max"):
            numeric = [
                c for c in features if c not in text_columns and (name != "no_null_features" or c not in gaps_allowed)
            ]
            feats = pd.to_numeric(values[numeric], errors="coerce").astype(float)  # nulls become NaN
            if name == "no_null_features":
                bad = feats[feats.isna()]
            elif name == "finite_features":
                bad = feats[np.isinf(feats)]
            elif contract.value_range is None:  # the range checks exist only with a range
                bad = feats.iloc[:0]
            elif name == "features_above_min":
                bad = _exactly(
                    table, row, feats[feats <= contract.value_range[0]], lambda v: v < contract.value_range[0]
                )
            else:
                bad = _exactly(
                    table, row, feats[feats >= contract.value_range[1]], lambda v: v > contract.value_range[1]
                )
            if len(bad):
                text += f": {bad.index[0]}={_show(table[bad.index[0]].iloc[row])}"
                if contract.value_range is not None and name.startswith("features_"):
                    text += f" outside [{contract.value_range[0]:g}, {contract.value_range[1]:g}]"
        parts.append(text)
    return "; ".join(parts)


def _exactly(table: pd.DataFrame, row: int, candidates: pd.Series, outside) -> pd.Series:
    """The candidates (found on doubles, where an int64 above 2**53 is rounded) whose own value is
    outside the range, compared exactly (a Python int against the bound)."""
    keep = [c for c in candidates.index if outside(_exact(table[c].iloc[row]))]
    return candidates[keep]


def _exact(value):
    return value.item() if isinstance(value, np.generic) else value


def _show(value) -> str:
    """A number as the reason shows it: an integer exactly (an int64 id above 2**53 too)."""
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):g}"


def _policy(column: str, contract: DataParams) -> str:
    spec = contract.columns.get(column)
    return spec.missing if spec is not None and spec.missing is not None else contract.missing


def _is_categorical(table: pd.DataFrame, column: str, contract: DataParams) -> bool:
    spec = contract.columns.get(column)
    if spec is not None and spec.type is not None:
        return spec.type == "categorical"
    return contract.image_shape is None and not pd.api.types.is_numeric_dtype(table[column])

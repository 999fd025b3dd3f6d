"""The data contract per feature column: its kind (numeric or categorical), its missing-value
policy and, optionally, its allowed categories.

One description serves every stage: clean validates rows against it, train and crossval fit the
transform (`pipeline.transform`) it implies on their training rows, export builds the served
graph's inputs from it. The kind comes from `data.columns.<name>.type` or, when left out, from the
column's type in the table: text is categorical, numbers are numeric. Image rows are numeric
pixels, always.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from pipeline.params import DataParams
from pipeline.tables import feature_columns

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FeatureContract:
    name: str
    kind: Kind
    missing: Literal["quarantine", "impute", "indicator"]
    categories: tuple[str, ...] | None  # allowed values; None = any
    declared: bool  # the kind comes from params (else inferred from the table)

    def describe(self) -> dict[str, object]:
        """Plain data for the clean report."""
        return {
            "column": self.name,
            "type": self.kind,
            "type from": "params" if self.declared else "inferred",
            "missing": self.missing,
            "categories": list(self.categories) if self.categories is not None else "any",
        }


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)


def inferred_kind(t: pa.DataType, data: DataParams) -> Kind:
    return "categorical" if data.image_shape is None and is_text(t) else "numeric"


def feature_contracts(schema: pa.Schema, data: DataParams) -> list[FeatureContract]:
    """Every feature column of `schema` as the contract describes it, in table order."""
    out = []
    for name in feature_columns(schema.names, data):
        spec = data.columns.get(name)
        declared = spec is not None and spec.type is not None
        kind: Kind = (
            spec.type if spec is not None and spec.type is not None else inferred_kind(schema.field(name).type, data)
        )
        missing = spec.missing if spec is not None and spec.missing is not None else data.missing
        categories = tuple(spec.categories) if spec is not None and spec.categories is not None else None
        out.append(FeatureContract(name, kind, missing, categories, declared))
    return out


def is_mixed(contracts: list[FeatureContract]) -> bool:
    """Whether rows need the fitted transform: a categorical column or a gap to fill. Otherwise
    (digits, all-numeric tables with no missing values) the rows go to the model as they are."""
    return any(c.kind == "categorical" or c.missing != "quarantine" for c in contracts)


def unknown_columns(schema: pa.Schema, data: DataParams) -> list[str]:
    """Columns `data.columns` names that are not feature columns of the table."""
    features = set(feature_columns(schema.names, data))
    return sorted(name for name in data.columns if name not in features)


def category_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A categorical column as text (object array; None where missing, an empty string counting as
    missing), as the transform and the served model see it."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = column.cast(pa.string())
    values = column.to_numpy(zero_copy_only=False).astype(object)
    values[values == ""] = None
    return values

"""Reading and writing the pipeline's tables (Parquet through pyarrow, CSV accepted as input).

Pixel-like columns are stored in the smallest integer type that holds them (uint8 for 0..255),
which keeps an MNIST-sized table at ~55 MB in memory instead of ~440 MB of float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path
from pipeline.errors import StageError
from pipeline.params import DataParams
from pipeline.row_groups import row_groups


class TableError(StageError):
    """The raw table cannot be read as a table at all (missing, empty, not CSV/Parquet)."""


def feature_columns(columns: list[str], contract: DataParams) -> list[str]:
    """The feature columns in table order: prefixed ones, or every non-label column."""
    return [c for c in columns if c != contract.label and c.startswith(contract.feature_prefix)]


def compact(values: pd.Series) -> pd.Series:
    """Downcast a numeric column to the smallest exact dtype (uint8 for pixels, else float32)."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values
    array = values.to_numpy()
    if array.dtype.kind in "iu" or (np.isfinite(array).all() and np.array_equal(array, np.round(array))):
        if len(array) == 0:
            return values.astype(np.uint8)
        lo, hi = array.min(), array.max()
        for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return values.astype(dtype)
    return values.astype(np.float32)


def write_parquet(table: pd.DataFrame, path: str | Path, **options) -> None:
    """Write atomically, without the pandas index; `options` go to pyarrow's write_table."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp, **options)


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(path, columns=columns).to_pandas()


def read_column(path: str | Path, name: str) -> np.ndarray:
    """One column of a Parquet file, in row order, read a row group at a time; no other column is
    read (split reads the labels this way, never the features)."""
    kind = pq.read_schema(path).field(name).type
    return pa.chunked_array([group.column(name) for group in row_groups(path, [name])], kind).to_numpy()

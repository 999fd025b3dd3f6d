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

TABLE_SUFFIXES = (".parquet", ".csv")


class TableError(StageError):
    """The raw table cannot be read as a table at all (missing, empty, not CSV/Parquet)."""


def source_files(source: str | Path) -> list[Path]:
    """The files a source names: the file itself, or every CSV/Parquet file in a folder, sorted."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
        if not files:
            raise TableError(f"{path}: folder holds no .csv or .parquet file; point data.source at your data")
        return files
    if not path.exists():
        raise TableError(f"{path}: not found; check data.source in params.yaml")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise TableError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")
    return [path]


def _read_one(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path).to_pandas()
        return pd.read_csv(path, engine="pyarrow")
    except Exception as error:  # pyarrow raises many types; all mean "cannot read"
        raise TableError(f"{path}: unreadable as {path.suffix[1:]} ({error}); restore or re-export the file") from None


def read_source(source: str | Path) -> pd.DataFrame:
    """Read a CSV/Parquet file or folder of them into one table."""
    frames = [_read_one(path) for path in source_files(source)]
    table = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if table.shape[1] == 0 or len(table) == 0:
        raise TableError(f"{source}: the table is empty (no rows or no columns)")
    return table


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

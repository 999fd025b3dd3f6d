"""The clean table's rows as the split assigned them: one torch-free way to select, read and label them.

train, crossval, export, evaluate and the gate all get their rows from a `SplitTable`:

- The split assignment must cover the clean table row for row; otherwise `RowsError` says to
  rerun split (the two files come from different runs).
- Only the label and feature columns are read (Parquet column projection), a row group and a few
  columns at a time, and only the rows a stage asks for are kept: evaluate holds the test split,
  not the whole table.
- Features keep the dtype they are stored in (uint8 pixels stay uint8, a quarter of float32); they
  become float32 a batch at a time, where a batch goes to the model. No float64 copy is made.
- Labels become indices into `data.classes` (the model's output order); a label outside it is a
  `RowsError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline import parts, transform
from pipeline.contract import category_values, feature_contracts, is_mixed
from pipeline.errors import StageError
from pipeline.params import DataParams
from pipeline.tables import feature_columns
from pipeline.transform import RawRows

# Feature values (in the stored dtype) read at once: columns are read in groups of about this
# size (at least one column), so what a read needs beyond its result stays bounded whatever the
# table's width. Parquet decodes through wider buffers, so the peak is a few times this (~7x for
# uint8 pixels); 16 MB measured as fast as 128 MB.
READ_BYTES = 16 * 2**20


class RowsError(StageError):
    """The split assignment does not fit the clean table, a part has no rows, or a label is not in
    data.classes."""


@dataclass(frozen=True)
class Rows:
    """Feature rows in their stored dtype, `[n, n_features]`, and class indices into data.classes."""

    x: np.ndarray
    y: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.y)

    def take(self, which: np.ndarray) -> Rows:
        return Rows(self.x[which], self.y[which])

    def float32(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Features of rows start..stop as float32 (what the model and its clients take)."""
        return np.ascontiguousarray(self.x[start:stop], dtype=np.float32)


def stored_dtype(types: list[pa.DataType]) -> np.dtype:
    """One numpy dtype for all feature columns: small integers stay as they are (exact in float32
    and 2-4x smaller), anything else becomes float32 (what the model computes in)."""
    dtype = np.result_type(*(t.to_pandas_dtype() for t in types))
    if dtype.kind in "biu" and dtype.itemsize <= 2:
        return dtype
    return np.dtype(np.float32)


def raw_block(block: pa.Table, label: str, numeric: list[str], categorical: list[str], indices, part: str) -> RawRows:
    """One block of raw rows from the label, numeric and categorical columns of `block`."""
    num = np.empty((block.num_rows, len(numeric)), np.float32)
    for j, name in enumerate(numeric):
        # null -> NaN; an integer above 2**53 becomes its nearest double (then float32, as every feature)
        num[:, j] = block.column(name).cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    cat = np.empty((block.num_rows, len(categorical)), object)
    for j, name in enumerate(categorical):
        cat[:, j] = category_values(block.column(name).combine_chunks())
    labels = block.column(label).combine_chunks().to_numpy(zero_copy_only=False)
    return RawRows(num, cat, indices(part, labels))


class SplitTable:
    """The clean table (a Parquet file, or an in-memory table in tests) and its split assignment,
    checked to fit each other. Rows are read on demand by `rows` / `split_rows`."""

    def __init__(self, source: str | Path | pa.Table, assignment: pd.DataFrame, data: DataParams) -> None:
        self._source = source
        self.data = data
        schema = source.schema if isinstance(source, pa.Table) else parts.schema(source)
        n = source.num_rows if isinstance(source, pa.Table) else parts.num_rows(source)
        rows = assignment["row"].to_numpy()
        if len(rows) != n or not np.array_equal(np.sort(rows), np.arange(n)):
            raise RowsError(
                f"the split assignment ({len(assignment)} rows) does not match the clean table ({n} rows); rerun split"
            )
        if data.label not in schema.names:
            raise RowsError(f"the clean table has no label column {data.label!r} (data.label); rerun clean")
        self.features = feature_columns(schema.names, data)
        if not self.features:
            raise RowsError(
                f"the clean table has no feature columns (data.feature_prefix {data.feature_prefix!r}); rerun clean"
            )
        # The contract per column: a categorical column or a missing-value policy makes the rows
        # "mixed": stages read them raw (`raw_rows`) and encode them with a fitted transform.
        self.contracts = feature_contracts(schema, data)
        self.mixed = is_mixed(self.contracts)
        types = [schema.field(c.name).type for c in self.contracts if c.kind == "numeric"]
        self.dtype = stored_dtype(types) if types else np.dtype(np.float32)
        order = np.argsort(rows, kind="stable")
        # Row i of the clean table: its split (train | val | test) and fold (-1 outside train).
        self.splits = np.asarray(assignment["split"].to_numpy()[order], dtype=str)
        self.folds = assignment["fold"].to_numpy()[order]

    @classmethod
    def open(cls, clean: str | Path, split: str | Path, data: DataParams) -> SplitTable:
        """The tables the stages get from dvc.yaml (folders of Parquet parts, or single files):
        reads the assignment and the clean table's footers."""
        return cls(clean, parts.read_table(split).to_pandas(), data)

    @classmethod
    def of(cls, table: pd.DataFrame, assignment: pd.DataFrame, data: DataParams) -> SplitTable:
        """In-memory tables (tests and small data)."""
        return cls(pa.Table.from_pandas(table, preserve_index=False), assignment, data)

    def __len__(self) -> int:
        return len(self.splits)

    @property
    def n_features(self) -> int:
        return len(self.features)

    def split_rows(self, split: str) -> Rows:
        """The rows of one split (train | val | test), in table order."""
        return self.rows(**{split: self.splits == split})[split]

    def rows(self, **parts: np.ndarray) -> dict[str, Rows]:
        """The rows each boolean mask (over the table's rows) selects, in table order, all read in
        one pass over the label and feature columns."""
        picks = {name: np.flatnonzero(mask) for name, mask in parts.items()}
        empty = [name for name, idx in picks.items() if len(idx) == 0]
        if empty:
            counts = {name: len(idx) for name, idx in picks.items()}
            raise RowsError(f"no {' or '.join(empty)} rows ({counts}); check split's output and the split params")
        xs = {name: np.empty((len(idx), self.n_features), self.dtype) for name, idx in picks.items()}
        ys: dict[str, list[np.ndarray]] = {name: [] for name in picks}
        start = 0
        for n, read in self._row_groups():
            wanted = {}  # part -> (its first and last + 1 row in this row group, their positions here)
            for name, idx in picks.items():
                lo, hi = np.searchsorted(idx, [start, start + n])
                if hi > lo:
                    wanted[name] = (lo, hi, idx[lo:hi] - start)
            if wanted:
                labels = self._column(read([self.data.label]), 0)
                for name, (_, _, at) in wanted.items():
                    ys[name].append(self._indices(name, labels[at]))
                self._fill_features(read, n, wanted, xs)
            start += n
        return {name: Rows(xs[name], np.concatenate(ys[name])) for name in picks}

    def fitted_rows(self, fit_on: str, **parts: np.ndarray) -> tuple[dict[str, Rows], dict | None]:
        """The rows of each part as the model takes them, and the transform fitted on part `fit_on`
        alone (None for a table that needs none: those rows are `rows(**parts)` unchanged)."""
        if not self.mixed:
            return self.rows(**parts), None
        raw = self.raw_rows(**parts)
        fitted = transform.fit(raw[fit_on], self.contracts)
        return {name: Rows(transform.encode(fitted, r), r.y) for name, r in raw.items()}, fitted

    def raw_rows(self, **parts: np.ndarray) -> dict[str, RawRows]:
        """Like `rows`, for mixed tables: numeric features as float32 with NaN for a gap,
        categorical ones as text (None for a gap), one row group at a time."""
        picks = {name: np.flatnonzero(mask) for name, mask in parts.items()}
        empty = [name for name, idx in picks.items() if len(idx) == 0]
        if empty:
            counts = {name: len(idx) for name, idx in picks.items()}
            raise RowsError(f"no {' or '.join(empty)} rows ({counts}); check split's output and the split params")
        numeric = [c.name for c in self.contracts if c.kind == "numeric"]
        categorical = [c.name for c in self.contracts if c.kind == "categorical"]
        got: dict[str, list[RawRows]] = {name: [] for name in picks}
        start = 0
        for n, read in self._row_groups():
            for name, idx in picks.items():
                lo, hi = np.searchsorted(idx, [start, start + n])
                if hi <= lo:
                    continue
                block = read([self.data.label, *numeric, *categorical]).take(pa.array(idx[lo:hi] - start))
                got[name].append(raw_block(block, self.data.label, numeric, categorical, self._indices, name))
            start += n
        return {
            name: RawRows(
                np.concatenate([r.numeric for r in blocks]),
                np.concatenate([r.categorical for r in blocks]),
                np.concatenate([r.y for r in blocks]),
            )
            for name, blocks in got.items()
        }

    def _fill_features(self, read, n: int, wanted: dict, xs: dict[str, np.ndarray]) -> None:
        """Copy the wanted rows of one row group into each part's features, a group of columns at a time."""
        width = max(1, READ_BYTES // max(1, n * self.dtype.itemsize))
        for j in range(0, self.n_features, width):
            block = read(self.features[j : j + width])
            columns = [self._column(block, k) for k in range(block.num_columns)]
            for name, (lo, hi, at) in wanted.items():
                # The picked columns stacked are contiguous (width, rows); copying their transpose
                # into the row-major result reads each source cache line for 64 rows in a row.
                picked = [column[at].astype(self.dtype, copy=False) for column in columns]
                xs[name][lo:hi, j : j + width] = np.stack(picked).T

    def _row_groups(self) -> Iterator[tuple[int, Callable[[list[str]], pa.Table]]]:
        """(rows, read(columns) -> those columns of its rows) for each row group of the table."""
        source = self._source
        if isinstance(source, pa.Table):
            yield source.num_rows, source.select
        else:
            yield from parts.row_groups(source)

    @staticmethod
    def _column(block: pa.Table, k: int) -> np.ndarray:
        column = block.column(k)
        if column.null_count:
            raise RowsError(f"column {block.column_names[k]!r} of the clean table holds nulls; rerun clean")
        # One contiguous array: zero copy for a numeric column (ChunkedArray.to_numpy is far slower).
        return column.combine_chunks().to_numpy(zero_copy_only=False)

    def _indices(self, part: str, labels: np.ndarray) -> np.ndarray:
        classes = list(self.data.classes)
        y = pd.Index(classes).get_indexer(labels)
        if (y < 0).any():
            unknown = sorted({label.item() if hasattr(label, "item") else label for label in labels[y < 0]}, key=str)
            raise RowsError(
                f"the {part} rows hold labels {unknown[:5]} that are not in data.classes {classes}; "
                "add them there or clean the data"
            )
        return y.astype(np.int64)

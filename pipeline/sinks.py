"""Where a streamed stage writes its tables: batch by batch, visible only once committed.

- `ParquetSink` writes to a hidden temporary file beside its path and renames it into place on
  `commit()`; `abort()` (or leaving its `with` block without a commit) removes it, so a failed
  run leaves nothing behind. Row groups have a fixed number of rows that depends only on the
  schema, so the same rows give the same file whatever the batch size or engine that wrote them.
- `MemorySink` collects the batches into one table (for tests and small in-memory tables).
- `CompactTypes` finds, over the rows that will be kept, the smallest exact type of each numeric
  column (uint8 for pixels, else float32), as `pipeline.tables.compact` does for a whole column;
  the stats of several pieces of the table merge into those of the whole. The clean table is then
  written in those types (CSV numbers arrive as float64, for example).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import current_umask
from pipeline.batches import row_width

# Raw bytes per row group, at most MAX_ROW_GROUP_ROWS rows. The writer keeps every row group's
# metadata until it closes, about 0.7 MB per row group of 785 columns: in 32 MB row groups a
# 7M-row MNIST-shaped table held 120 MB of it, in 128 MB row groups 30 MB. Writing holds up to a
# row group of rows (readers decode a few columns of one at a time: `pipeline.rows`).
ROW_GROUP_BYTES = 128 << 20
MAX_ROW_GROUP_ROWS = 1 << 20  # Arrow's own default: narrow tables' metadata is small anyway
_INTEGER_TYPES = (pa.uint8(), pa.int8(), pa.uint16(), pa.int16(), pa.int32(), pa.int64())


class Sink(Protocol):
    schema: pa.Schema

    def write(self, batch: pa.RecordBatch) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


def row_group_rows(schema: pa.Schema) -> int:
    return int(np.clip(ROW_GROUP_BYTES // row_width(schema), 1_024, MAX_ROW_GROUP_ROWS))


class _GroupedWriter:
    """A Parquet writer whose row groups all have `rows` rows (the last one fewer)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.rows = row_group_rows(schema)
        self.schema = schema
        self._writer = pq.ParquetWriter(path, schema)
        self._pending: list[pa.RecordBatch] = []
        self._count = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._count += batch.num_rows
        if self._count >= self.rows:
            table = pa.Table.from_batches(self._pending, schema=self.schema)
            full = (self._count // self.rows) * self.rows
            self._writer.write_table(table.slice(0, full), row_group_size=self.rows)
            rest = table.slice(full)
            self._pending, self._count = rest.to_batches(), rest.num_rows

    def close(self) -> None:
        if self._count:
            self._writer.write_table(pa.Table.from_batches(self._pending, schema=self.schema), row_group_size=self.rows)
        self._pending, self._count = [], 0
        self._writer.close()


class ParquetSink:
    def __init__(self, path: str | Path, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.schema = schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer: _GroupedWriter | None = _GroupedWriter(self._tmp, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        assert self._writer is not None, "write after commit or abort"
        self._writer.write(batch)

    def commit(self) -> None:
        """Make the file appear at its path."""
        assert self._writer is not None, "commit after commit or abort"
        self._writer.close()
        self._writer = None
        os.chmod(self._tmp, 0o666 & ~current_umask())  # a plain file's mode, not mkstemp's 0600
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc) -> None:
        self.abort()  # after a commit there is nothing left to remove


class MemorySink:
    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._batches: list[pa.RecordBatch] = []
        self.table: pa.Table | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        self._batches.append(batch)

    def commit(self) -> None:
        self.table = pa.Table.from_batches(self._batches, schema=self.schema)

    def abort(self) -> None:
        self._batches = []

    def frame(self) -> pd.DataFrame:
        assert self.table is not None, "not committed"
        return self.table.to_pandas()


class CompactTypes:
    """Running minimum, maximum and integrality of each numeric column of the rows written."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._lo: dict[str, float] = {}
        self._hi: dict[str, float] = {}
        self._fractional: set[str] = set()

    @staticmethod
    def tracked(t: pa.DataType) -> bool:
        # uint8 is already the smallest type; booleans and text keep their type.
        return (pa.types.is_integer(t) or pa.types.is_floating(t)) and t != pa.uint8()

    def update(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        for field, column in zip(self.schema, batch.columns, strict=True):
            if not self.tracked(field.type):
                continue
            if pa.types.is_floating(field.type) and field.name not in self._fractional:
                finite = pc.all(pc.is_finite(column)).as_py()
                if not finite or not pc.all(pc.equal(column, pc.round(column))).as_py():
                    self._fractional.add(field.name)
            bounds = pc.min_max(column).as_py()
            self.observe(field.name, bounds["min"], bounds["max"])

    def merge(self, other: CompactTypes) -> None:
        """Add what `other` saw (another piece of the same table)."""
        for name in other._lo:
            self.observe(name, other._lo[name], other._hi[name], name in other._fractional)
        self._fractional |= other._fractional

    def observe(self, name: str, lo: float | None, hi: float | None, fractional: bool = False) -> None:
        """Values from `lo` to `hi` were written to column `name` (some not whole numbers, if
        `fractional`); None, None = no rows."""
        if fractional:
            self._fractional.add(name)
        if lo is not None and hi is not None:
            self._lo[name] = min(self._lo.get(name, np.inf), lo)
            self._hi[name] = max(self._hi.get(name, -np.inf), hi)

    def types(self) -> pa.Schema:
        """The schema to commit with: each tracked column in its smallest exact type."""
        fields = []
        for field in self.schema:
            kind = field.type
            if self.tracked(kind):
                if field.name in self._fractional:
                    kind = pa.float32()
                elif field.name not in self._lo:  # no rows
                    kind = pa.uint8()
                else:
                    lo, hi = self._lo[field.name], self._hi[field.name]
                    kind = next((t for t in _INTEGER_TYPES if _fits(t, lo, hi)), pa.float32())
            fields.append(pa.field(field.name, kind, field.nullable))
        return pa.schema(fields)


def _fits(kind: pa.DataType, lo: float, hi: float) -> bool:
    info = np.iinfo(kind.to_pandas_dtype())
    return info.min <= lo and hi <= info.max

"""A raw table as a stream of Arrow record batches with one schema, in bounded memory.

- Parquet is read one row group at a time, so memory follows the file's row groups and the batch
  rather than the table. (A row group is the smallest unit a Parquet reader decodes: a file
  written as one 1M-row group costs that much to read whatever the batch size;
  `large_row_groups` names such files so the log can say so.)
- CSV goes through pyarrow's streaming reader. Its type inference looks only at the first block,
  so numeric feature columns are read as float64 from the start (categorical ones, declared or
  text in the first block of a tabular table, as text): a decimal point or a gap in a later
  block then reads as a number (or a null), and a word reads as a conversion error that names the
  column (`NonNumericColumn`).
- A folder of files reads as one table: their schemas are unified (int + float = float; a column
  one file lacks is null there), in file order, as `pandas.concat` of the files would be.
- Files are `pipeline.sources` objects, local or in a bucket, each read as an open random-access
  file at its pinned version (`sources.open_object`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.contract import inferred_kind
from pipeline.params import DataParams
from pipeline.row_groups import row_groups
from pipeline.sources import SourceObject, list_source, open_object
from pipeline.tables import TableError, feature_columns

CSV_BLOCK_BYTES = 16 << 20  # CSV text parsed at a time; batches are then merged up to the batch size
LARGE_ROW_GROUP_BYTES = 512 << 20  # above this much raw data per row group the log warns


class NonNumericColumn(TableError):
    """A CSV feature column holds a value that is not a number (found while streaming)."""

    def __init__(self, column: str, value: str) -> None:
        super().__init__(f"non-numeric feature column(s) {[column]} (wrong type; every feature must be a number)")
        self.column, self.value = column, value


@dataclass(frozen=True)
class RawStream:
    """Where the rows come from: the source's objects (or one in-memory table), their unified
    schema, and the number of rows per batch."""

    schema: pa.Schema
    batch_rows: int
    objects: tuple[SourceObject, ...] = ()
    table: pa.Table | None = None
    contract: DataParams | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """The local files of the source (an object in a bucket has none: read `objects`)."""
        return tuple(obj.path for obj in self.objects)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every row once, in source order, each batch cast to `schema`."""
        if self.table is not None:
            yield from self.table.to_batches(max_chunksize=self.batch_rows)
            return
        for obj in self.objects:
            reader = _parquet_batches if obj.format == "parquet" else self._csv_batches
            for batch in _merged(reader(obj, self.batch_rows), self.batch_rows):
                yield _conform(batch, self.schema)

    def _csv_batches(self, path: SourceObject, batch_rows: int) -> Iterator[pa.RecordBatch]:
        reader = _open_csv(path, self.contract)
        names = reader.schema.names
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as error:
                raise _csv_error(path, names, error) from None
            yield batch

    def large_row_groups(self) -> list[tuple[str, int]]:
        """Parquet files whose row groups alone exceed LARGE_ROW_GROUP_BYTES of raw data."""
        width = row_width(self.schema)
        out = []
        for obj in self.objects:
            if obj.format == "parquet":
                with open_object(obj) as file:
                    meta = pq.ParquetFile(file).metadata
                biggest = max((meta.row_group(i).num_rows for i in range(meta.num_row_groups)), default=0)
                if biggest * width > LARGE_ROW_GROUP_BYTES:
                    out.append((obj.url, biggest))
        return out


def row_width(schema: pa.Schema) -> int:
    """Bytes one row takes in memory (fixed-width types exactly; 32 bytes assumed for others)."""
    total = 0
    for field in schema:
        try:
            total += max(field.type.bit_width // 8, 1)
        except ValueError:
            total += 32
    return max(total, 1)


def rows_per_batch(schema: pa.Schema, batch_mb: float) -> int:
    return max(1, int(batch_mb * (1 << 20)) // row_width(schema))


def open_source(source: str | Path | Sequence[SourceObject], contract: DataParams, batch_mb: float) -> RawStream:
    """The stream of a CSV/Parquet file, folder or prefix (`pipeline.sources.list_source`), or of
    objects already listed (pinned); reads schemas only (and CSV's first block)."""
    files = list_source(source)
    schemas = [_file_schema(path, contract) for path in files]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise TableError(f"{source}: the files' columns have types that do not combine ({error})") from None
    if len(schema) == 0:
        raise TableError(f"{source}: the table is empty (no rows or no columns)")
    return RawStream(schema, rows_per_batch(schema, batch_mb), tuple(files), contract=contract)


def from_table(table: pd.DataFrame | pa.Table, batch_rows: int) -> RawStream:
    """An in-memory table as a stream (tests, small tables)."""
    if isinstance(table, pd.DataFrame):
        table = _arrow_from_pandas(table)
    table = table.replace_schema_metadata(None)
    return RawStream(table.schema, batch_rows, table=table)


def _arrow_from_pandas(frame: pd.DataFrame) -> pa.Table:
    columns = {}
    for name in frame.columns:
        try:
            columns[str(name)] = pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed objects: keep them as text, as a CSV would
            columns[str(name)] = pa.array(frame[name].astype(str))
    return pa.table(columns)


def _file_schema(path: SourceObject, contract: DataParams) -> pa.Schema:
    try:
        if path.format == "parquet":
            with open_object(path) as file:
                return pq.read_schema(file).remove_metadata()
        return _open_csv(path, contract).schema
    except TableError:
        raise
    except Exception as error:  # pyarrow raises many types; all mean "cannot read"
        raise TableError(
            f"{path.describe()}: unreadable as {path.format} ({error}); restore or re-export the file"
        ) from None


def _parquet_batches(path: SourceObject, batch_rows: int) -> Iterator[pa.RecordBatch]:
    # One row group at a time, synchronously: pyarrow's dataset scanner reads ahead while a slow
    # consumer (validation, the writer) works, and its queue grew to several row groups. Only the
    # row group's own metadata is held (`pipeline.row_groups`), not the whole file's footer.
    with open_object(path) as file:
        for group in row_groups(file):
            yield from group.to_batches(max_chunksize=batch_rows)


def _open_csv(path: SourceObject, contract: DataParams | None) -> pacsv.CSVStreamingReader:
    try:
        with open_object(path) as file:
            first = pacsv.open_csv(file, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema
        types = {}
        if contract is not None:
            types = {
                name: _csv_type(first.field(name).type, name, contract)
                for name in feature_columns(first.names, contract)
            }
        return pacsv.open_csv(
            open_object(path),  # closed when the reader is: pyarrow owns the stream it reads
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
    except pa.ArrowInvalid as error:
        raise TableError(f"{path.describe()}: unreadable as csv ({error}); restore or re-export the file") from None


def _csv_type(first_block: pa.DataType, name: str, contract: DataParams) -> pa.DataType:
    """A feature column's type for the whole file: a categorical one (declared, or text in the
    first block of a tabular table) is read as text, anything else as float64."""
    spec = contract.columns.get(name)
    kind = spec.type if spec is not None and spec.type is not None else inferred_kind(first_block, contract)
    return pa.string() if kind == "categorical" else pa.float64()


def _csv_error(path: SourceObject, names: list[str], error: pa.ArrowInvalid) -> TableError:
    found = re.search(r"CSV column #(\d+).*invalid value '(.*)'", str(error))
    if found and int(found.group(1)) < len(names):
        return NonNumericColumn(names[int(found.group(1))], found.group(2))
    return TableError(f"{path.describe()}: unreadable as csv ({error}); restore or re-export the file")


def _merged(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Small batches (CSV blocks, short row groups) merged up to `rows` rows each."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if not pending and batch.num_rows >= rows:
            yield batch
            continue
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch with exactly `schema`'s columns and types (a column its file lacks is null)."""
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    names = batch.schema.names
    arrays = [
        batch.column(names.index(field.name)).cast(field.type)
        if field.name in names
        else pa.nulls(batch.num_rows, field.type)
        for field in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)

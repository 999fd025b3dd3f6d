"""A raw table as a stream of Arrow record batches with one schema, in bounded memory.

- Parquet is read one row group at a time, so memory follows the file's row groups and the batch
  rather than the table. (A row group is the smallest unit a Parquet reader decodes: a file
  written as one 1M-row group costs that much to read whatever the batch size;
  `large_row_groups` names such files so the log can say so.)
- CSV goes through pyarrow's streaming reader. Its type inference looks only at the first block,
  so numeric feature columns are read as float64 from the start (categorical ones, declared or
  text in the first block of a tabular table, as text): a decimal point or a gap in a later
  block then reads as a number (or a null). A column whose first-block values are mostly numbers
  is numeric even if a few are words.
- A value of a numeric column that is not a number (a word in a CSV, text in a Parquet column
  that should hold numbers) does not stop the stream: it becomes a gap, and the batch says which
  rows held what (`RawBatch.unparsed`, `pipeline.numbers`), for validation to quarantine them.
- A folder of files reads as one table: their schemas are unified (int + float = float; a column
  one file lacks is null there), in file order, as `pandas.concat` of the files would be.
- Files are `pipeline.sources` objects, local or in a bucket, each read as an open random-access
  file at its pinned version (`sources.open_object`).

Where each row's reading starts (a whole file, a run of Parquet row groups) is `pipeline.units`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline import numbers
from pipeline.contract import inferred_kind
from pipeline.numbers import Unparsed
from pipeline.params import DataParams
from pipeline.row_groups import FooterError, FooterLayout, footer_layout, row_groups
from pipeline.sources import SourceObject, list_source, open_object
from pipeline.tables import TableError, feature_columns

log = logging.getLogger(__name__)

CSV_BLOCK_BYTES = 16 << 20  # CSV text parsed at a time; batches are then merged up to the batch size
LARGE_ROW_GROUP_BYTES = 512 << 20  # above this much raw data per row group the log warns


class RawBatch(NamedTuple):
    """Rows of the stream in its schema, and the values of its numeric columns that were not
    numbers (now gaps in `rows`), by column."""

    rows: pa.RecordBatch
    unparsed: dict[str, Unparsed]


@dataclass(frozen=True)
class RawStream:
    """Where the rows come from: the source's objects (or one in-memory table), their unified
    schema, and the number of rows per batch."""

    schema: pa.Schema
    batch_rows: int
    objects: tuple[SourceObject, ...] = ()
    table: pa.Table | None = None
    contract: DataParams | None = None
    # Each Parquet object's footer layout (None for CSV, or a footer `pipeline.row_groups` cannot cut).
    layouts: tuple[FooterLayout | None, ...] = ()

    @property
    def files(self) -> tuple[Path, ...]:
        """The local files of the source (an object in a bucket has none: read `objects`)."""
        return tuple(obj.path for obj in self.objects)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every row once, in source order, each batch in `schema` (a value of a numeric column
        that is not a number as a gap; `raw_batches` says which they were)."""
        for batch in self.raw_batches():
            yield batch.rows

    def raw_batches(self) -> Iterator[RawBatch]:
        """Every row once, in source order, with the values that were not numbers."""
        if self.table is not None:
            yield from self.table_batches()
            return
        for obj in self.objects:
            yield from self.file_batches(obj)

    def table_batches(self) -> Iterator[RawBatch]:
        assert self.table is not None
        for batch in self.table.to_batches(max_chunksize=self.batch_rows):
            yield conform(batch, self.schema)

    def file_batches(self, obj: SourceObject, groups: Iterator[pa.Table] | None = None) -> Iterator[RawBatch]:
        """The rows of one object (of some of its Parquet row groups, when `groups` reads them)."""
        if obj.format == "parquet":
            tables = groups if groups is not None else _parquet_groups(obj)
            raw = (conform(b, self.schema) for t in tables for b in t.to_batches(max_chunksize=self.batch_rows))
        else:
            raw = (conform(b, self.schema) for b in _csv_batches(obj, self.contract))
        yield from merged(raw, self.batch_rows)

    def large_row_groups(self) -> list[tuple[str, int]]:
        """Parquet objects whose row groups alone exceed LARGE_ROW_GROUP_BYTES of raw data."""
        width = row_width(self.schema)
        out = []
        for obj, layout in zip(self.objects, self.layouts, strict=True):
            if obj.format == "parquet":
                biggest = max(layout.rows if layout is not None else group_rows(obj), default=0)
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
    objects already listed (pinned); reads footers only (and CSV's first block)."""
    files = list_source(source)
    layouts = [_layout(path) for path in files]
    schemas = [
        numeric_schema(_file_schema(path, layout, contract), contract)
        for path, layout in zip(files, layouts, strict=True)
    ]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise TableError(f"{source}: the files' columns have types that do not combine ({error})") from None
    if len(schema) == 0:
        raise TableError(f"{source}: the table is empty (no rows or no columns)")
    return RawStream(schema, rows_per_batch(schema, batch_mb), tuple(files), contract=contract, layouts=tuple(layouts))


def from_table(table: pd.DataFrame | pa.Table, batch_rows: int, contract: DataParams | None = None) -> RawStream:
    """An in-memory table as a stream (tests, small tables)."""
    if isinstance(table, pd.DataFrame):
        table = _arrow_from_pandas(table)
    table = table.replace_schema_metadata(None)
    schema = table.schema if contract is None else numeric_schema(table.schema, contract)
    return RawStream(schema, batch_rows, table=table, contract=contract)


def numeric_schema(schema: pa.Schema, contract: DataParams) -> pa.Schema:
    """`schema` with every numeric feature column that holds text as float64: its values are
    parsed (`conform`), so a stray word is one bad row, not a table of the wrong type."""
    features = set(feature_columns(schema.names, contract))

    def numeric(field: pa.Field) -> bool:
        spec = contract.columns.get(field.name)
        kind = spec.type if spec is not None and spec.type is not None else inferred_kind(field.type, contract)
        return field.name in features and kind == "numeric" and numbers.is_text(field.type)

    return pa.schema([pa.field(f.name, pa.float64()) if numeric(f) else f for f in schema])


def _arrow_from_pandas(frame: pd.DataFrame) -> pa.Table:
    columns = {}
    for name in frame.columns:
        try:
            columns[str(name)] = pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed objects: keep them as text, as a CSV would
            columns[str(name)] = pa.array(frame[name].astype(str))
    return pa.table(columns)


def _layout(obj: SourceObject) -> FooterLayout | None:
    if obj.format != "parquet":
        return None
    try:
        with open_object(obj) as file:
            return footer_layout(file)
    except (FooterError, IndexError):  # IndexError: the footer ended inside a value
        return None
    except OSError as error:
        raise TableError(f"{obj.describe()}: unreadable as parquet ({error}); restore or re-export the file") from None


def _file_schema(obj: SourceObject, layout: FooterLayout | None, contract: DataParams) -> pa.Schema:
    try:
        if layout is not None:
            return layout.schema
        if obj.format == "parquet":
            with open_object(obj) as file:
                return pq.read_schema(file).remove_metadata()
        return _csv_schema(obj, contract)
    except TableError:
        raise
    except Exception as error:  # pyarrow raises many types; all mean "cannot read"
        raise TableError(
            f"{obj.describe()}: unreadable as {obj.format} ({error}); restore or re-export the file"
        ) from None


def group_rows(obj: SourceObject) -> tuple[int, ...]:
    """Each row group's row count, from pyarrow's reading of the whole footer."""
    with open_object(obj) as file:
        meta = pq.ParquetFile(file).metadata
        return tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))


def _parquet_groups(obj: SourceObject) -> Iterator[pa.Table]:
    # One row group at a time, synchronously: pyarrow's dataset scanner reads ahead while a slow
    # consumer (validation, the writer) works, and its queue grew to several row groups. Only the
    # row group's own metadata is held (`pipeline.row_groups`), not the whole file's footer.
    with open_object(obj) as file:
        yield from row_groups(file)


def _csv_schema(obj: SourceObject, contract: DataParams | None) -> pa.Schema:
    """The file's columns in the types the stream reads them: pyarrow's inference on the first
    block, numeric feature columns as float64 and categorical ones as text (`_csv_type`)."""
    try:
        with open_object(obj) as file:
            first = pacsv.open_csv(file, read_options=pacsv.ReadOptions(block_size=1 << 16))
            fields = list(first.schema)
            if contract is not None:
                block = _first_block(first)
                features = set(feature_columns(first.schema.names, contract))
                fields = [
                    pa.field(f.name, _csv_type(f.type, block.get(f.name), f.name, contract))
                    if f.name in features
                    else f
                    for f in fields
                ]
        return pa.schema(fields)
    except pa.ArrowInvalid as error:
        raise TableError(f"{obj.describe()}: unreadable as csv ({error}); restore or re-export the file") from None


def _open_csv(obj: SourceObject, contract: DataParams | None, text: bool = False) -> pacsv.CSVStreamingReader:
    """A streaming reader; numeric feature columns as float64, or as text when `text` (the
    tolerant reading, whose values `conform` parses one by one)."""
    schema = _csv_schema(obj, contract)
    features = set(feature_columns(schema.names, contract)) if contract is not None else set()
    types = {f.name: pa.string() if text and f.type == pa.float64() else f.type for f in schema if f.name in features}
    file = open_object(obj)  # closed when the reader is: pyarrow owns the stream it reads
    try:
        return pacsv.open_csv(
            file,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
    except BaseException:
        file.close()
        raise


def _first_block(reader: pacsv.CSVStreamingReader) -> dict[str, pa.Array]:
    try:
        batch = reader.read_next_batch()
    except StopIteration:
        return {}
    return {name: batch.column(i) for i, name in enumerate(batch.schema.names)}


def _csv_type(first_block: pa.DataType, values: pa.Array | None, name: str, contract: DataParams) -> pa.DataType:
    """A feature column's type for the whole file: a categorical one (declared, or text in the
    first block of a tabular table whose values there are mostly not numbers) is read as text,
    anything else as float64."""
    spec = contract.columns.get(name)
    if spec is not None and spec.type is not None:
        return pa.string() if spec.type == "categorical" else pa.float64()
    kind = inferred_kind(first_block, contract)
    if kind == "categorical" and values is not None:
        parsed, unparsed = numbers.parse(values)
        words = 0 if unparsed is None else len(unparsed.rows)
        if words < len(parsed) - parsed.null_count:
            kind = "numeric"  # mostly numbers: the words are bad values of a numeric column
    return pa.string() if kind == "categorical" else pa.float64()


def _csv_batches(obj: SourceObject, contract: DataParams | None) -> Iterator[pa.RecordBatch]:
    """The file's batches. A value that is not a number in a column read as float64 stops
    pyarrow's reader (when it opens, for the first block); the rest of the file is then read again
    with those columns as text, from the row where it stopped."""
    done, text = 0, False
    while True:
        try:
            reader = _open_csv(obj, contract, text)
            yield from _skip_rows(reader, done)
            while True:
                batch = reader.read_next_batch()
                done += batch.num_rows
                yield batch
        except StopIteration:
            return
        except (pa.ArrowInvalid, TableError) as error:
            if text or "conversion error" not in str(error):
                raise TableError(
                    f"{obj.describe()}: unreadable as csv ({error}); restore or re-export the file"
                ) from None
            log.info("%s: a numeric column holds text after row %d; reading the rest as text", obj.describe(), done)
            text = True


def _skip_rows(reader: pacsv.CSVStreamingReader, rows: int) -> Iterator[pa.RecordBatch]:
    """The part after its first `rows` rows of the batches `reader` reads until then."""
    while rows > 0:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        if batch.num_rows > rows:
            yield batch.slice(rows)
        rows -= batch.num_rows


def merged(batches: Iterator[RawBatch], rows: int) -> Iterator[RawBatch]:
    """Small batches (CSV blocks, short row groups) merged up to `rows` rows each."""
    pending: list[RawBatch] = []
    count = 0
    for batch in batches:
        if batch.rows.num_rows == 0:
            continue
        if not pending and batch.rows.num_rows >= rows:
            yield batch
            continue
        pending.append(batch)
        count += batch.rows.num_rows
        if count >= rows:
            yield _concat(pending)
            pending, count = [], 0
    if pending:
        yield _concat(pending)


def _concat(batches: list[RawBatch]) -> RawBatch:
    if len(batches) == 1:
        return batches[0]
    rows = pa.Table.from_batches([b.rows for b in batches]).combine_chunks().to_batches()[0]
    unparsed: dict[str, list[tuple[int, Unparsed]]] = {}
    offset = 0
    for batch in batches:
        for name, bad in batch.unparsed.items():
            unparsed.setdefault(name, []).append((offset, bad))
        offset += batch.rows.num_rows
    return RawBatch(
        rows,
        {
            name: Unparsed(
                np.concatenate([bad.rows + at for at, bad in parts]), [t for _, bad in parts for t in bad.texts]
            )
            for name, parts in unparsed.items()
        },
    )


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> RawBatch:
    """The batch with exactly `schema`'s columns and types (a column its file lacks is null; text
    in a numeric column is parsed, a value that is not a number becoming a gap)."""
    if batch.schema.equals(schema, check_metadata=False):
        return RawBatch(batch, {})
    names = batch.schema.names
    arrays, unparsed = [], {}
    for field in schema:
        if field.name not in names:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(names.index(field.name))
        if numbers.is_text(column.type) and not numbers.is_text(field.type):
            column, bad = numbers.parse(column)
            if bad is not None:
                unparsed[field.name] = bad
        # safe=False: an int64 above 2**53 in a file whose column another file made float64
        # becomes the nearest double, as pandas.concat would make it, rather than an error.
        arrays.append(column.cast(field.type, safe=not pa.types.is_floating(field.type)))
    return RawBatch(pa.RecordBatch.from_arrays(arrays, schema=schema), unparsed)

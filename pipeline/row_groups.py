"""Read a Parquet file one row group at a time, holding the metadata of that row group only.

pyarrow parses a file's whole footer when it opens the file and keeps it until the file is
closed: about 0.9 MB per row group of 785 columns once parsed (a ColumnChunk record per column),
so a 7M-row table in 65,536-row groups (as DuckDB, Polars or Spark write them) held ~95 MB of
footer for the whole of a streamed read, the biggest part of clean's memory that grew with the
rows. The serialized footer is ~13x smaller (Thrift's compact protocol). `row_groups` therefore
reads the serialized footer once, cuts it into one footer per row group (the file's fields, with
a row-group list of one) and hands each to pyarrow in turn, so only one row group's metadata is
ever parsed at a time. Column chunks are located by absolute file offsets, which a cut footer
keeps, so the data read is the same.

The file is a path or an open random-access file (`pipeline.sources.open_object`: an object in a
bucket); an open file is read in place and left open.

`footer_layout` records where each row group is described in the footer, so that another process
(a Spark executor given a unit of work, `pipeline.units`) reads one row group with `read_group`,
fetching that group's metadata bytes and the footer's head and tail rather than the whole footer.

Only the top level of the footer is understood here; everything inside a row group is skipped
by its Thrift type, byte for byte. Any file this cannot cut (an encrypted footer, a Thrift type it
does not know) is read with pyarrow's own reader instead.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeAlias

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

MAGIC = b"PAR1"
_ROW_GROUPS_FIELD = 4  # FileMetaData.row_groups: list<RowGroup>
_LIST, _STRUCT = 9, 12  # Thrift compact protocol type ids
_ONE_STRUCT = bytes([0x10 | _STRUCT])  # a list header: one element, of structs


Source: TypeAlias = "str | Path | IO[bytes] | pa.NativeFile"  # a path, or an open random-access file


class FooterError(ValueError):
    """The footer is not one this module can cut (pyarrow's reader reads the file instead)."""


def row_groups(path: Source, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Each row group of the file at `path` (or the open file `path`) as a table (only `columns`,
    if given), in file order."""
    try:
        footers = cut_footer(read_footer(path))
    except (FooterError, IndexError) as error:  # IndexError: the footer ended inside a value
        log.debug("%s: reading with the whole footer (%s)", path, error)
        reader = pq.ParquetFile(path)
        for i in range(reader.num_row_groups):
            yield reader.read_row_group(i, columns=columns)
        return
    for i in range(len(footers)):
        footer, footers[i] = footers[i], b""  # the cut footer of a read group is not kept either
        with pq.ParquetFile(path, metadata=_metadata(footer)) as reader:
            yield reader.read_row_group(0, columns=columns)


def read_footer(path: Source) -> bytes:
    """The serialized FileMetaData at the end of a Parquet file (a path or an open file)."""
    opened = open(path, "rb") if isinstance(path, str | Path) else contextlib.nullcontext(path)  # noqa: SIM115
    with opened as file:
        file.seek(0, 2)
        size = file.tell()
        if size < 12:
            raise FooterError("too short for a Parquet file")
        file.seek(size - 8)
        tail = file.read(8)
        if tail[4:] != MAGIC:
            raise FooterError(f"ends in {tail[4:]!r}, not {MAGIC!r} (an encrypted footer?)")
        (length,) = struct.unpack("<i", tail[:4])
        if not 0 < length <= size - 12:
            raise FooterError(f"footer length {length} does not fit the file")
        file.seek(size - 8 - length)
        return file.read(length)


def cut_footer(meta: bytes) -> list[bytes]:
    """One serialized FileMetaData per row group: every other field as it is, `row_groups` a list
    of that one group."""
    head, groups, tail = footer_spans(meta)
    return [meta[:head] + _ONE_STRUCT + meta[start:end] + meta[tail:] for start, end in groups]


def footer_spans(meta: bytes) -> tuple[int, list[tuple[int, int]], int]:
    """Where the parts of a serialized FileMetaData are: the bytes before the row-group list
    (`meta[:head]`), each row group's bytes, and the bytes after the list (`meta[tail:]`)."""
    pos, field = 0, 0
    while True:
        header = meta[pos]
        pos += 1
        kind, delta = header & 0x0F, header >> 4
        if header == 0:
            raise FooterError("no row_groups field")
        if delta:
            field += delta
        else:
            zigzag, pos = _varint(meta, pos)
            field = (zigzag >> 1) ^ -(zigzag & 1)
        if field == _ROW_GROUPS_FIELD and kind == _LIST:
            break
        pos = _skip(meta, pos, kind)
    head = pos
    size, element = meta[pos] >> 4, meta[pos] & 0x0F
    pos += 1
    if size == 15:
        size, pos = _varint(meta, pos)
    if element != _STRUCT:
        raise FooterError(f"row_groups holds Thrift type {element}, not structs")
    groups = []
    for _ in range(size):
        end = _skip(meta, pos, _STRUCT)
        groups.append((pos, end))
        pos = end
    return head, groups, pos


@dataclass(frozen=True)
class FooterLayout:
    """Where a Parquet file's row groups are described: enough to read one row group later, by
    another process, with that group's metadata alone and without reading the rest of the footer."""

    start: int  # file offset of the serialized footer
    head: int  # its bytes before the row-group list
    groups: tuple[tuple[int, int], ...]  # each row group's bytes in it
    tail: tuple[int, int]  # its bytes after the list
    rows: tuple[int, ...]  # each row group's row count
    schema: pa.Schema


def footer_layout(path: Source) -> FooterLayout:
    """The layout of the footer of the Parquet file at `path`, a path or an open random-access
    file (FooterError if it cannot be cut)."""
    meta = read_footer(path)
    head, groups, tail = footer_spans(meta)
    rows, schema = [], None
    for start, end in groups:  # one group's parsed metadata at a time
        metadata = _metadata(meta[:head] + _ONE_STRUCT + meta[start:end] + meta[tail:])
        rows.append(metadata.row_group(0).num_rows)
        schema = schema or metadata.schema.to_arrow_schema()
    schema = schema or _metadata(meta).schema.to_arrow_schema()  # no row group: the footer is small
    start = _size(path) - 8 - len(meta)
    return FooterLayout(start, head, tuple(groups), (tail, len(meta)), tuple(rows), schema.remove_metadata())


def read_group(path: Source, layout: FooterLayout, i: int, columns: list[str] | None = None) -> pa.Table:
    """Row group `i` of the file (a path or an open file) whose footer `layout` describes,
    reading only that row group's metadata."""
    start, end = layout.groups[i]
    opened = open(path, "rb") if isinstance(path, str | Path) else contextlib.nullcontext(path)  # noqa: SIM115
    with opened as file:
        parts = []
        for lo, hi in ((0, layout.head), (start, end), layout.tail):
            file.seek(layout.start + lo)
            parts.append(file.read(hi - lo))
    footer = parts[0] + _ONE_STRUCT + parts[1] + parts[2]
    reader = pq.ParquetFile(path, metadata=_metadata(footer))
    return reader.read_row_group(0, columns=columns)


def _size(path: Source) -> int:
    if isinstance(path, str | Path):
        return Path(path).stat().st_size
    path.seek(0, 2)
    return path.tell()


def _metadata(footer: bytes) -> pq.FileMetaData:
    file = MAGIC + footer + struct.pack("<i", len(footer)) + MAGIC
    return pq.read_metadata(pa.BufferReader(file))


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _skip(buf: bytes, pos: int, kind: int) -> int:
    """The position after one value of Thrift compact type `kind` starting at `pos`."""
    if kind in (1, 2):  # booleans: the value is in the field header
        return pos
    if kind == 3:  # byte
        return pos + 1
    if kind in (4, 5, 6):  # i16, i32, i64: one varint
        while buf[pos] & 0x80:
            pos += 1
        return pos + 1
    if kind == 7:  # double
        return pos + 8
    if kind == 8:  # binary / string
        length, pos = _varint(buf, pos)
        return pos + length
    if kind in (9, 10):  # list, set
        size, element = buf[pos] >> 4, buf[pos] & 0x0F
        pos += 1
        if size == 15:
            size, pos = _varint(buf, pos)
        if element in (1, 2):  # booleans in a list take a byte each
            return pos + size
        for _ in range(size):
            pos = _skip(buf, pos, element)
        return pos
    if kind == 11:  # map
        size, pos = _varint(buf, pos)
        if size == 0:
            return pos
        types = buf[pos]
        pos += 1
        for _ in range(size):
            pos = _skip(buf, pos, _list_bool(types >> 4))
            pos = _skip(buf, pos, _list_bool(types & 0x0F))
        return pos
    if kind == _STRUCT:
        while True:
            header = buf[pos]
            pos += 1
            if header == 0:
                return pos
            if header >> 4 == 0:  # a field id that is not a small delta follows as a varint
                _, pos = _varint(buf, pos)
            pos = _skip(buf, pos, header & 0x0F)
    if kind == 13:  # uuid
        return pos + 16
    raise FooterError(f"unknown Thrift type {kind} at byte {pos}")


def _list_bool(kind: int) -> int:
    # Inside containers a boolean is a byte of its own (type 1 or 2 alike): skip it as a byte.
    return 3 if kind in (1, 2) else kind

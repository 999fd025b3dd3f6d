"""Units of work: the source cut, from its metadata alone, into pieces that a process reads alone.

A unit is a CSV file, or a run of consecutive row groups of one Parquet file holding up to
`engine.unit_mb` of raw rows (at least one row group; a row group is the smallest piece a Parquet
reader decodes). Both engines cut the same source into the same units: the local engine works
through them in order, Spark hands one to each task. Unit i becomes part i of the clean table and
of the quarantine (`pipeline.parts`), so the same source gives the same files on either engine.

Planning reads footers only (each Parquet object's was read once when the stream opened), never a
row: what the driver of a Spark job holds is one small record per unit. A unit carries where its
row groups are described in its file's footer (`pipeline.row_groups.FooterLayout`), so the
process that reads it parses those row groups' metadata and nothing more.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.batches import RawBatch, RawStream, group_rows, row_width
from pipeline.row_groups import FooterLayout, read_group
from pipeline.sources import SourceObject, open_object

IN_MEMORY = -1  # Unit.file of the stream's in-memory table


@dataclass(frozen=True)
class Unit:
    index: int
    file: int  # position in the stream's objects, or IN_MEMORY
    groups: tuple[int, ...] = ()  # Parquet row groups of the file, in order; () = all of it
    rows: int | None = None  # known in advance for Parquet and tables, not for CSV


def plan(stream: RawStream, unit_mb: float) -> list[Unit]:
    """The stream's units, in source order."""
    if stream.table is not None:
        return [Unit(0, IN_MEMORY, rows=stream.table.num_rows)]
    budget = max(1, int(unit_mb * (1 << 20)) // row_width(stream.schema))  # rows per unit
    units: list[Unit] = []
    for f, obj in enumerate(stream.objects):
        if obj.format != "parquet":
            units.append(Unit(len(units), f))
            continue
        layout = stream.layouts[f] if stream.layouts else None
        rows = layout.rows if layout is not None else group_rows(obj)
        run: list[int] = []
        for g, n in enumerate(rows):
            if run and sum(rows[i] for i in run) + n > budget:
                units.append(Unit(len(units), f, tuple(run), sum(rows[i] for i in run)))
                run = []
            run.append(g)
        if run:
            units.append(Unit(len(units), f, tuple(run), sum(rows[i] for i in run)))
    return units


def read(stream: RawStream, unit: Unit) -> Iterator[RawBatch]:
    """The unit's rows, batch by batch, in the stream's schema."""
    if unit.file == IN_MEMORY:
        yield from stream.table_batches()
        return
    obj = stream.objects[unit.file]
    if obj.format != "parquet":
        yield from stream.file_batches(obj)
        return
    layout = stream.layouts[unit.file] if stream.layouts else None
    yield from stream.file_batches(obj, _groups(obj, layout, unit.groups))


def _groups(obj: SourceObject, layout: FooterLayout | None, groups: tuple[int, ...]) -> Iterator[pa.Table]:
    with open_object(obj) as file:
        if layout is None:  # a footer that cannot be cut: pyarrow's reader, whole footer and all
            reader = pq.ParquetFile(file)
            for g in groups:
                yield reader.read_row_group(g)
            return
        for g in groups:
            yield read_group(file, layout, g)

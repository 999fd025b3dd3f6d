"""The second pass over a unit of work: write its kept rows and its quarantined rows as parts.

Runs once the verdict has passed, so the clean table's types are known: kept rows are written in
them directly, quarantined rows (those a row check failed, with the reason the first pass gave;
and the duplicates) with their row number in the source and their columns as they were read. Part
i of each output is unit i's. The same function runs in the local engine's process and, for
Spark, on the executors, so the parts are the same bytes whichever engine wrote them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from pipeline import units
from pipeline.batches import RawStream
from pipeline.sinks import Sink
from pipeline.units import Unit
from pipeline.validation import ROW_REASONS

DUPLICATE_REASON = ROW_REASONS["not_duplicate"]
OpenPart = Callable[[str, int, pa.Schema], Sink]  # (output, unit, schema) -> the sink of that part


def quarantine_schema(raw: pa.Schema) -> pa.Schema:
    """The quarantine table: the raw row's number, its columns as they came, and a reason."""
    return pa.schema([pa.field("row", pa.int64()), *raw, pa.field("reason", pa.string())])


def quarantined_rows(bad: np.ndarray, reasons: list[str], duplicates: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Every quarantined row of a unit (ascending) and its reason: a duplicate that also failed a
    row check has both."""
    rows = np.union1d(bad, duplicates).astype(np.int64)
    out = []
    given = dict(zip(bad.tolist(), reasons, strict=True))
    repeated = set(duplicates.tolist())
    for row in rows.tolist():
        parts = [given[row]] if row in given else []
        if row in repeated:
            parts.append(DUPLICATE_REASON)
        out.append("; ".join(parts))
    return rows, out


def write_unit(
    stream: RawStream,
    unit: Unit,
    offset: int,
    quarantined: tuple[np.ndarray, list[str]],
    kept: pa.Schema,
    open_part: OpenPart,
) -> tuple[int, int]:
    """Write unit `unit` (its first row being row `offset` of the source); returns (kept, quarantined) rows."""
    rows, reasons = quarantined
    clean = open_part("clean", unit.index, kept)
    quarantine = open_part("quarantine", unit.index, quarantine_schema(stream.schema))
    written = [0, 0]
    start = 0
    try:
        for raw in units.read(stream, unit):
            batch, n = raw.rows, raw.rows.num_rows
            lo, hi = np.searchsorted(rows, [start, start + n])
            if hi > lo:
                at = rows[lo:hi] - start
                taken = batch.take(pa.array(at))
                columns = [pa.array(rows[lo:hi] + offset), *taken.columns, pa.array(reasons[lo:hi], pa.string())]
                quarantine.write(pa.RecordBatch.from_arrays(columns, schema=quarantine.schema))
                keep = np.ones(n, bool)
                keep[at] = False
                batch = batch.filter(pa.array(keep))
                written[1] += int(hi - lo)
            clean.write(batch.select(kept.names).cast(kept))
            written[0] += batch.num_rows
            start += n
            # Arrow's allocator (mimalloc) keeps freed pages for reuse; the decoded row groups and
            # the writer's buffered rows come and go in sizes it reuses poorly, which held ~60 MB
            # more at the peak (measured at 700k rows). Handing them back per batch costs nothing
            # measurable.
            pa.default_memory_pool().release_unused()
        clean.commit()
        quarantine.commit()
    finally:
        clean.abort()  # a no-op after a commit
        quarantine.abort()
    return written[0], written[1]

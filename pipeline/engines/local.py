"""The local engine: clean and split in one process, in memory bounded by the batch, not the table.

clean reads the raw table batch by batch (`pipeline.batches`), validates each batch with the GX
suite (`pipeline.validation.StreamValidation`), flags rows that repeat an earlier row by their
64-bit hash (`pipeline.rowhash`), and writes kept and quarantined rows as it goes. Nothing becomes
visible before every batch has been read and the whole-table checks have passed.

split reads the label column of the clean table and nothing else (`pipeline.tables.read_column`;
this module's imports are clean's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import numpy as np
import pyarrow as pa

from pipeline.batches import NonNumericColumn, RawStream
from pipeline.engines import OpenSink, quarantine_schema
from pipeline.params import CleanParams, DataParams
from pipeline.rowhash import RowHasher, SeenRows
from pipeline.sinks import CompactTypes
from pipeline.tables import TableError
from pipeline.validation import StreamValidation, Tally, describe_failure, judge, row_reason, validation_failed

log = logging.getLogger(__name__)


# Which rows of a batch (its first row being row `offset` of the table) go to quarantine, and
# the checks each failed: {row: [check names]}.
BadRows = Callable[[pa.RecordBatch, int], dict[int, list[str]]]


def clean(stream: RawStream, contract: DataParams, params: CleanParams, open_sink: OpenSink) -> tuple[dict, str]:
    """Validate every row of `stream`; write kept and quarantined rows; return (metrics, report).

    Raises ValidationFailed (or TableError) naming every problem; the sinks are then aborted."""
    validation = StreamValidation(stream.schema, contract, params)
    check_schema(validation, stream, contract)
    hasher, seen = RowHasher(stream.schema), SeenRows()

    def bad_rows(batch: pa.RecordBatch, offset: int) -> dict[int, list[str]]:
        return validation.validate_batch(batch, seen.add(hasher.hash(batch)))

    metrics, report = write(stream, validation, contract, open_sink, bad_rows, validation.finish)
    log.info(
        "kept %d rows, quarantined %d (%.2f%%) in %d-row batches",
        metrics["rows_kept"],
        metrics["rows_quarantined"],
        100 * metrics["quarantined_share"],
        stream.batch_rows,
    )
    return metrics, report


def check_schema(validation: StreamValidation, stream: RawStream, contract: DataParams) -> None:
    """The column checks, before any row is read; a failure stops here."""
    failures = validation.check_schema()
    if failures:
        raise validation_failed([describe_failure(c, contract, stream.schema.names) for c in failures])
    for path, rows in stream.large_row_groups():
        log.warning(
            "%s: row groups of %d rows; reading one takes memory for all of it whatever clean.batch_mb says "
            "(rewrite the file with smaller row groups to use less)",
            path,
            rows,
        )


def write(
    stream: RawStream,
    validation: StreamValidation,
    contract: DataParams,
    open_sink: OpenSink,
    bad_rows: BadRows,
    finish: Callable[[], Tally],
) -> tuple[dict, str]:
    """One pass over the rows: kept rows to the clean sink, bad ones with their reasons to the
    quarantine; then the verdict (`finish` gives every check's result) and, if it passes, commit."""
    kept_schema = pa.schema([stream.schema.field(name) for name in (contract.label, *validation.features)])
    kept, quarantine = open_sink("clean", kept_schema), open_sink("quarantine", quarantine_schema(stream.schema))
    types = CompactTypes(kept_schema)
    pool = pa.default_memory_pool()
    offset = 0
    try:
        for batch in stream.batches():
            n = batch.num_rows
            bad = bad_rows(batch, offset)
            if bad:
                rows = sorted(bad)
                taken = batch.take(pa.array(np.asarray(rows) - offset))
                frame = taken.to_pandas()
                reasons = [row_reason(frame, i, bad[row], contract) for i, row in enumerate(rows)]
                validation.count_quarantined(bad, partial(_reason, frame, rows, contract))
                columns = [pa.array(rows, pa.int64()), *taken.columns, pa.array(reasons, pa.string())]
                quarantine.write(pa.RecordBatch.from_arrays(columns, schema=quarantine.schema))
                keep = np.ones(batch.num_rows, bool)
                keep[np.asarray(rows) - offset] = False
                batch = batch.filter(pa.array(keep))
            offset += n
            batch = batch.select(kept_schema.names)
            types.update(batch)
            kept.write(batch)
            # Arrow's allocator (mimalloc) keeps freed pages for reuse; the decoded row groups and
            # the writer's buffered rows come and go in sizes it reuses poorly, which held ~60 MB
            # more at the peak (measured at 700k rows). Handing them back per batch costs nothing
            # measurable.
            pool.release_unused()
        if offset == 0:
            raise TableError("the table is empty (no rows)")
        metrics, report = judge(finish(), contract, validation.params)
        kept.commit(types.types())
        quarantine.commit()
    except NonNumericColumn as error:
        raise validation_failed([str(error)]) from None
    finally:
        kept.abort()  # a no-op after a commit
        quarantine.abort()
    return metrics, report


def _reason(frame, rows: list[int], contract: DataParams, row: int, names: list[str]) -> str:
    return row_reason(frame, rows.index(row), names, contract)

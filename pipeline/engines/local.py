"""The local engine: clean in one process, in memory bounded by the batch, not the table.

The source is cut into units (`pipeline.units`) and read twice, batch by batch:

1. every unit is checked (`pipeline.engines.inspect`): row checks through the GX suite, each
   row's 64-bit hash to a bucket file on disk, the bad rows' reasons to a small file per unit;
2. the buckets give the exact duplicates (`pipeline.engines.duplicates`), one bucket in memory at
   a time; the units' reports and the duplicates give the verdict (`pipeline.engines.verdict`);
3. if it passes, every unit is read again and written as one part of the clean table and one of
   the quarantine (`pipeline.engines.write`), in the types the verdict fixed.

Nothing becomes visible before step 3 has written every part: the staged folders then replace the
outputs all at once (`pipeline.engines.outputs`). What this process holds between batches is one
report per unit and the duplicates' row numbers, not a byte per row of the table.
The Spark engine runs the same three steps, the first and last on its executors.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import units
from pipeline.batches import RawStream
from pipeline.engines.duplicates import HashBuckets
from pipeline.engines.inspect import inspect_unit, read_bad_rows
from pipeline.engines.outputs import FolderOutputs, MemoryOutputs
from pipeline.engines.verdict import check_schema, judge_units
from pipeline.engines.write import quarantined_rows, write_unit
from pipeline.params import CleanParams, DataParams, EngineParams
from pipeline.validation import RowChecks

log = logging.getLogger(__name__)


def clean(
    stream: RawStream,
    contract: DataParams,
    params: CleanParams,
    engine: EngineParams,
    outputs: FolderOutputs | MemoryOutputs,
) -> tuple[dict[str, Any], str]:
    """Validate every row of `stream`; write kept and quarantined rows; return (metrics, report).

    Raises ValidationFailed (or TableError) naming every problem; nothing is written then."""
    try:
        checks = RowChecks(stream.schema, contract, params)
        schema_results = check_schema(checks, stream, contract)
        plan = units.plan(stream, engine.unit_mb)
        buckets = HashBuckets(Path(outputs.work) / "hashes")
        try:
            reports = [inspect_unit(stream, unit, checks, buckets, outputs.work) for unit in plan]
        finally:
            buckets.close()
        duplicates = buckets.duplicates()
        verdict = judge_units(stream, checks, schema_results, reports, duplicates, params)
        for unit in plan:
            quarantined = quarantined_rows(
                *read_bad_rows(outputs.work, unit.index), duplicates.by_unit.get(unit.index, np.empty(0, np.int64))
            )
            write_unit(stream, unit, verdict.offsets[unit.index], quarantined, verdict.kept, outputs.open_part)
        outputs.commit()
    finally:
        outputs.abort()
    metrics = verdict.metrics
    log.info(
        "kept %d rows, quarantined %d (%.2f%%) in %d units of %d-row batches",
        metrics["rows_kept"],
        metrics["rows_quarantined"],
        100 * metrics["quarantined_share"],
        len(plan),
        stream.batch_rows,
    )
    return metrics, verdict.report

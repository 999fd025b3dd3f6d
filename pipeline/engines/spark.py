"""The Spark engine's clean: the local engine's three steps, with the passes over the data on the executors.

The driver lists the source and reads its footers (`pipeline.batches.open_source`), cuts it into
units (`pipeline.units`: a file, or a run of Parquet row groups) and hands one unit to each task:

1. executors read their unit with pyarrow (local files, or objects in a bucket through
   `pipeline.sources`), run the row checks and hash the rows (`pipeline.engines.inspect`), and
   write the hashes and the bad rows' reasons to the work folder; each returns a small report;
2. Spark finds the exact duplicates with a window over the hashes (a shuffle on the executors);
   the driver collects their totals and, with the reports, judges the table
   (`pipeline.engines.verdict`), raising before anything is written if it fails;
3. executors read their unit again and write its part of the clean table and of the quarantine
   (`pipeline.engines.write`), getting the rows to quarantine from the work folder and the
   duplicates of their unit from the shuffle.

The driver never holds a row: what it gets back is one report per unit and a few totals, so its
memory does not grow with the table. The work folder and the staged outputs sit beside the
outputs, which must be on storage every executor can write (a local run, or a shared filesystem
on a cluster); executors need this project installed (`pip install -e '.[spark]'`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import units
from pipeline.batches import RawStream, open_source
from pipeline.engines.duplicates import Duplicates
from pipeline.engines.inspect import UnitReport, inspect_unit, read_bad_rows
from pipeline.engines.outputs import FolderOutputs
from pipeline.engines.spark_session import MASTER_ENV, master, require_spark, session, size_shuffles
from pipeline.engines.verdict import check_schema, judge_units
from pipeline.engines.write import quarantined_rows, write_unit
from pipeline.errors import StageError
from pipeline.params import CleanParams, DataParams, EngineParams
from pipeline.units import Unit
from pipeline.validation import RowChecks

__all__ = ["MASTER_ENV", "clean", "master", "session"]

log = logging.getLogger(__name__)

HASHES = pa.schema(
    [
        pa.field("unit", pa.int32()),
        pa.field("row", pa.int64()),
        pa.field("hash", pa.int64()),
        pa.field("bad", pa.bool_()),
    ]
)
HASHES_ROW_BYTES = 24  # what a row takes in the duplicates' shuffle
_CHECKS: dict[str, RowChecks] = {}  # per Python worker: the GX views, built once for a table


def clean(
    source: str, contract: DataParams, params: CleanParams, engine: EngineParams, paths: dict[str, str]
) -> tuple[dict[str, Any], str]:
    """The Spark counterpart of pipeline.engines.local.clean: the same checks and the same files."""
    require_spark()
    stream = open_source(source, contract, params.batch_mb)
    checks = RowChecks(stream.schema, contract, params)
    schema_results = check_schema(checks, stream, contract)
    plan = units.plan(stream, engine.unit_mb)
    outputs = FolderOutputs.create(paths)
    job = CleanJob(stream, contract, params, outputs.work)
    try:
        with session(engine, "clean") as spark:
            sc = spark.sparkContext
            reports: list[UnitReport] = sc.parallelize(plan, len(plan)).mapPartitions(job.inspect).collect()
            log.info("step 1: %d units checked", len(reports))
            rows = sum(r.rows for r in reports)
            size_shuffles(spark, engine, rows, HASHES_ROW_BYTES)
            duplicates = _duplicates(spark, outputs.work) if rows else Duplicates()
            log.info("step 2: %d exact duplicates", duplicates.count)
            verdict = judge_units(stream, checks, schema_results, reports, duplicates, params)
            writer = UnitWriter(job, verdict.offsets, verdict.kept, outputs)
            written = sc.parallelize(plan, len(plan)).mapPartitions(writer.run).collect()
        _check_written(written, verdict.metrics, len(plan))
        outputs.commit()
    finally:
        outputs.abort()
    log.info(
        "cleaned %d rows on Spark (%s) in %d units: %d quarantined",
        verdict.metrics["rows_in"],
        master(engine),
        len(plan),
        verdict.metrics["rows_quarantined"],
    )
    return verdict.metrics, verdict.report


@dataclass(frozen=True)
class CleanJob:
    """What an executor needs for a unit: the stream (its objects and footer layouts), the
    contract and the work folder. Small and picklable; no rows."""

    stream: RawStream
    contract: DataParams
    params: CleanParams
    work: str

    def checks(self) -> RowChecks:
        key = repr((self.stream.schema.to_string(), self.contract.model_dump_json(), self.params.model_dump_json()))
        if key not in _CHECKS:
            _CHECKS.clear()
            _CHECKS[key] = RowChecks(self.stream.schema, self.contract, self.params)
        return _CHECKS[key]

    def inspect(self, plan: Iterable[Unit]) -> Iterator[UnitReport]:
        """Step 1, on an executor: each unit's checks, its hashes to the work folder."""
        for unit in plan:
            sink = HashFile(Path(self.work) / "hashes" / f"unit-{unit.index:06d}.parquet")
            try:
                yield inspect_unit(self.stream, unit, self.checks(), sink, self.work)
            finally:
                sink.close()


@dataclass(frozen=True)
class UnitWriter:
    job: CleanJob
    offsets: list[int]
    kept: pa.Schema
    outputs: FolderOutputs

    def run(self, plan: Iterable[Unit]) -> Iterator[tuple[int, int, int]]:
        """Step 3, on an executor: write each unit's parts; yields (unit, kept rows, quarantined rows)."""
        for unit in plan:
            found = _unit_duplicates(self.job.work, unit.index)
            quarantined = quarantined_rows(*read_bad_rows(self.job.work, unit.index), found)
            kept, bad = write_unit(
                self.job.stream, unit, self.offsets[unit.index], quarantined, self.kept, self.outputs.open_part
            )
            yield unit.index, kept, bad


class HashFile:
    """The hash sink of one unit on an executor: a Parquet file in the work folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: pq.ParquetWriter | None = None

    def write(self, unit: int, start: int, hashes: np.ndarray, bad: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, HASHES)
        columns = [
            pa.array(np.full(len(hashes), unit, np.int32)),
            pa.array(np.arange(start, start + len(hashes), dtype=np.int64)),
            pa.array(hashes.view(np.int64)),
            pa.array(bad),
        ]
        self._writer.write_table(pa.Table.from_arrays(columns, schema=HASHES))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _duplicates(spark, work: str) -> Duplicates:
    """Step 2: the rows whose hash an earlier row has, found on the executors and written to the
    work folder by unit (`dups/unit=<i>/`); only their totals come to the driver."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    hashes = spark.read.schema("unit int, row long, hash long, bad boolean").parquet(str(Path(work) / "hashes"))
    first = Window.partitionBy("hash").orderBy("unit", "row")
    dups = (
        hashes.withColumn("n", F.row_number().over(first))
        .where(F.col("n") > 1)
        .select("unit", "row", "bad")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    totals = dups.agg(
        F.count(F.lit(1)).alias("count"),
        F.count(F.when(~F.col("bad"), 1)).alias("only"),
        F.min(F.struct("unit", "row")).alias("first"),
    ).collect()[0]
    if totals["count"]:
        dups.select("unit", "row").repartition("unit").write.partitionBy("unit").parquet(str(Path(work) / "dups"))
    dups.unpersist()
    first_dup = totals["first"]
    return Duplicates(
        int(totals["count"]),
        int(totals["only"]),
        None if first_dup is None else (int(first_dup["unit"]), int(first_dup["row"])),
    )


def _unit_duplicates(work: str, unit: int) -> np.ndarray:
    """The duplicates of one unit (rows in the unit, ascending), from the work folder."""
    folder = Path(work) / "dups" / f"unit={unit}"
    if not folder.is_dir():
        return np.empty(0, np.int64)
    rows = [pq.read_table(p, columns=["row"]).column("row").to_numpy() for p in sorted(folder.glob("*.parquet"))]
    return np.sort(np.concatenate(rows)) if rows else np.empty(0, np.int64)


def _check_written(written: list[tuple[int, int, int]], metrics: dict[str, Any], units_planned: int) -> None:
    """Every unit wrote its parts, with the rows the verdict counted (else a task was lost or ran twice)."""
    kept = sum(w[1] for w in written)
    bad = sum(w[2] for w in written)
    if sorted(w[0] for w in written) != list(range(units_planned)) or (kept, bad) != (
        metrics["rows_kept"],
        metrics["rows_quarantined"],
    ):
        raise StageError(
            f"the executors wrote {kept} kept and {bad} quarantined rows in {len(written)} of {units_planned} units; "
            f"the verdict counted {metrics['rows_kept']} and {metrics['rows_quarantined']}. Nothing was committed; rerun"
        )

"""The Spark engine: clean and split on Apache Spark, for tables that outgrow one machine.

The contract and its checks are the local engine's: the schema checks run on the schema (as
there), the row profile and the duplicate flags are Spark expressions over the whole table, and
the same Great Expectations suite validates them through GX's Spark data source. The executors
then write every row once, flagged kept or quarantined, to a staging folder beside the outputs;
the driver joins the kept rows into the one Parquet file the pipeline versions (in row order, in
the local engine's compact types and row groups: the same file, byte for byte) and words the
quarantine reasons, whose number the quarantine share bounds.

Rows keep their position in the source (the `row` the quarantine reports and split assigns by).
Spark orders a scan's partitions by size, not position, so the position is rebuilt from each
row's file, the byte offset of its split and its rank inside the split.

The master is `SPARK_MASTER` from the environment when set (what an Airflow task takes from the
Connection `spark_default`), else `engine.spark_master` in params. On a cluster the source, the
outputs and their folder must be on a filesystem the driver and every executor see (the shared
workspace).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.batches import open_source
from pipeline.engines import OpenSink, quarantine_schema
from pipeline.params import CleanParams, DataParams, EngineParams
from pipeline.sinks import CompactTypes
from pipeline.tables import TableError
from pipeline.validation import (
    ROW_REASONS,
    GxView,
    StreamValidation,
    check_result,
    describe_failure,
    expectations,
    judge,
    row_reason,
    silent_context,
    validation_failed,
)

log = logging.getLogger(__name__)

MASTER_ENV = "SPARK_MASTER"
ROW = "__row"
BAD = "__bad"


def master(engine: EngineParams) -> str:
    return os.environ.get(MASTER_ENV) or engine.spark_master


@contextlib.contextmanager
def session(engine: EngineParams, app: str) -> Iterator:
    """A Spark session on the configured master, stopped on exit (an active one is reused as is)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise TableError(
            "engine.name is spark but PySpark is not installed: install the project with its `spark` extra "
            "(pip install -e '.[spark]'), or set engine.name: local"
        ) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise TableError(
            "engine.name is spark but no Java runtime was found: install Java 17, or set engine.name: local"
        )
    url = master(engine)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors run the same interpreter
    conf = {
        "spark.ui.enabled": "false",  # a batch job: no web UI on port 4040, no progress bars
        "spark.ui.showConsoleProgress": "false",
        # Let adaptive execution shrink the 200 default shuffle partitions of the cached profile.
        "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
        "spark.sql.session.timeZone": "UTC",
        # One file split per partition, so that a partition holds consecutive rows (_write_kept).
        "spark.sql.files.openCostInBytes": "134217728",
        "spark.sql.files.maxPartitionBytes": "134217728",
    }
    if url.startswith("local"):
        conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
    builder = SparkSession.builder.master(url).appName(f"triton-retrain {app}")
    for key, value in {**conf, **engine.spark_conf}.items():
        builder = builder.config(key, value)
    log.info("Spark master %s", url)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        yield spark
    finally:
        spark.stop()


def _col(name: str):
    from pyspark.sql import functions as F

    return F.col(f"`{name}`")


def _with_positions(spark, frame, files: list[Path]):
    """`frame` (with the scan's file, split offset and monotonically increasing id) plus ROW, the
    row's position in the source, files in the order `files` lists them.

    Within a file split the rows are read in order and their ids are consecutive; so ROW = (rows in
    the splits before this one) + (id - the split's first id)."""
    from pyspark.sql import functions as F

    splits = frame.groupBy("__file", "__block").agg(F.min("__rank").alias("__first"), F.count("*").alias("__n"))
    order = {p.resolve().as_uri(): i for i, p in enumerate(files)}

    def position(r) -> tuple[int, int]:
        return order.get(Path(unquote(urlparse(r["__file"]).path)).resolve().as_uri(), len(order)), r["__block"]

    offsets, total = [], 0
    for r in sorted(splits.collect(), key=position):
        offsets.append((r["__file"], r["__block"], r["__first"], total))
        total += r["__n"]
    table = spark.createDataFrame(offsets, "__file string, __block long, __first long, __offset long")
    return (
        frame.join(F.broadcast(table), ["__file", "__block"])
        .withColumn(ROW, F.col("__offset") + F.col("__rank") - F.col("__first"))
        .drop("__file", "__block", "__rank", "__first", "__offset")
    )


def _scan(reader, columns: list[str]):
    from pyspark.sql import functions as F

    return reader.select(
        *[_col(name) for name in columns],
        F.col("_metadata.file_path").alias("__file"),
        F.col("_metadata.file_block_start").alias("__block"),
        F.monotonically_increasing_id().alias("__rank"),
    )


def _read(spark, files: list[Path], schema: pa.Schema):
    """The source as one DataFrame with every row's position in the source (ROW)."""
    parquet = [str(p) for p in files if p.suffix.lower() == ".parquet"]
    csv = [str(p) for p in files if p.suffix.lower() != ".parquet"]
    frames = []
    if parquet:
        frames.append(spark.read.option("mergeSchema", "true").parquet(*parquet))
    if csv:  # the types the local engine reads CSV with (features as float64)
        frames.append(spark.read.csv(csv, header=True, schema=_spark_schema(schema), mode="FAILFAST"))
    frame = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1], allowMissingColumns=True)
    return _with_positions(spark, _scan(frame, schema.names), files)


def _spark_schema(schema: pa.Schema):
    from pyspark.sql import types as T

    def spark_type(t: pa.DataType):
        if pa.types.is_floating(t):
            return T.DoubleType()
        if pa.types.is_integer(t):
            return T.LongType()
        if pa.types.is_boolean(t):
            return T.BooleanType()
        return T.StringType()

    return T.StructType([T.StructField(f.name, spark_type(f.type), True) for f in schema])


def _profile(raw, schema: pa.Schema, label: str, features: list[str]):
    """The rows view: pipeline.validation.profile_batch as Spark columns, plus the duplicate flag
    (a row with the same values as a row before it), from one pass over the table."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    floating = {f.name for f in schema if pa.types.is_floating(f.type)}

    def missing(name: str):
        return _col(name).isNull() | F.isnan(_col(name)) if name in floating else _col(name).isNull()

    def infinite(name: str):
        return _col(name).isin(float("inf"), float("-inf"))

    def finite(name: str):  # null where missing or infinite: least/greatest skip nulls
        bad = missing(name) | infinite(name) if name in floating else missing(name)
        return F.when(~bad, _col(name).cast("double"))

    def count(flags: list):
        return F.size(F.filter(F.array(*flags), lambda x: x)) if flags else F.lit(0)

    def hashed(name: str) -> list:
        # NaN and -0.0 normalised and nulls marked: equal rows hash equally, a null is not a skip.
        value = _col(name)
        if name in floating:
            value = F.when(F.isnan(value), F.lit(float("nan"))).otherwise(value + 0.0)
        return [_col(name).isNull(), value]

    def extreme(pick):
        values = [finite(n) for n in features]
        return pick(*values) if len(values) > 1 else values[0] if values else F.lit(None).cast("double")

    profile = raw.select(
        ROW,
        _col(label).alias("label"),
        count([missing(n) for n in features]).alias("null_features"),
        count([infinite(n) for n in features if n in floating]).alias("nonfinite_features"),
        extreme(F.least).alias("feature_min"),
        extreme(F.greatest).alias("feature_max"),
        F.xxhash64(*[part for name in schema.names for part in hashed(name)]).alias("__hash"),
    )
    first = Window.partitionBy("__hash").orderBy(ROW)
    return profile.withColumn("duplicate", F.row_number().over(first) > 1).drop("__hash")


def clean(
    source: str, contract: DataParams, params: CleanParams, engine: EngineParams, open_sink: OpenSink, staging: Path
) -> tuple[dict, str]:
    """The Spark counterpart of pipeline.engines.local.clean: the same checks and the same files."""
    from pyspark import StorageLevel

    stream = open_source(source, contract, params.batch_mb)  # the schema, as the local engine reads it
    validation = StreamValidation(stream.schema, contract, params)
    failures = validation.check_schema()
    if failures:
        raise validation_failed([describe_failure(c, contract, stream.schema.names) for c in failures])
    staging.mkdir(parents=True, exist_ok=True)
    with session(engine, "clean") as spark, tempfile.TemporaryDirectory(prefix=".spark-", dir=staging) as tmp:
        raw = _read(spark, list(stream.files), stream.schema)
        profile = _profile(raw, stream.schema, contract.label, validation.features).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        try:
            bad = _validate(profile, validation, contract, params)
        finally:
            profile.unpersist()
        if validation.rows_in == 0:
            raise TableError("the table is empty (no rows)")
        kept_parts, bad_rows = _stage(spark, raw, bad, stream.schema, Path(tmp))
        frame = bad_rows.select(stream.schema.names).to_pandas()
        rows = bad_rows.column(ROW).to_pylist()
        validation.count_quarantined(bad, lambda row, names: row_reason(frame, rows.index(row), names, contract))
        metrics, report = judge(validation.tally(), contract, params)
        kept_schema = pa.schema([stream.schema.field(n) for n in (contract.label, *validation.features)])
        types = _compact_types(spark, kept_parts, kept_schema)
        quarantine = open_sink("quarantine", quarantine_schema(stream.schema))
        kept = open_sink("clean", types)
        try:
            reasons = [row_reason(frame, i, bad[row], contract) for i, row in enumerate(rows)]
            columns = [pa.array(rows, pa.int64()), *bad_rows.select(stream.schema.names).columns, pa.array(reasons)]
            for batch in pa.Table.from_arrays(columns, schema=quarantine.schema).to_batches():
                quarantine.write(batch)
            for part in _in_row_order(spark, kept_parts, Path(tmp)):
                for batch in pq.ParquetFile(part).iter_batches(batch_size=65_536, columns=types.names):
                    kept.write(batch.cast(types))
            quarantine.commit()
            kept.commit()
        finally:
            quarantine.abort()
            kept.abort()
    log.info(
        "kept %d rows, quarantined %d (%.2f%%) on Spark (%s)",
        metrics["rows_kept"],
        metrics["rows_quarantined"],
        100 * metrics["quarantined_share"],
        master(engine),
    )
    return metrics, report


def _validate(profile, validation: StreamValidation, contract: DataParams, params: CleanParams) -> dict[int, list[str]]:
    """The rows suite through GX's Spark data source, and the whole-table checks on the same
    frame; records every result in `validation` and returns the bad rows {row: failed checks}."""
    from pyspark.sql import functions as F

    suite = expectations(contract, params, validation.features)
    context = silent_context()
    keyed = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW]}
    row_checks = [c for c in suite["rows"] if c[0] in ROW_REASONS]
    bad: dict[int, list[str]] = {}
    for name, res in GxView(context, "spark_rows", row_checks, source="spark").run(profile, keyed):
        found = sorted((res.result or {}).get("unexpected_index_list") or [], key=lambda d: d[ROW])
        column = res.expectation_config.kwargs["column"]
        validation.record("rows", name, check_result("rows", name, res, [d[column] for d in found[:5]]))
        for entry in found:
            bad.setdefault(int(entry[ROW]), []).append(name)
    counted = [c for c in suite["table"] if c[0] == "enough rows"]
    for name, res in GxView(context, "spark_count", counted, source="spark").run(profile.select(ROW)):
        validation.record("table", name, check_result("table", name, res))
        validation.rows_in = int((res.result or {}).get("observed_value") or 0)
    share = [c for c in suite["rows"] if c[0] not in ROW_REASONS]
    flags = profile.select(F.col("duplicate").cast("int").alias("duplicate"))
    for name, res in GxView(context, "spark_share", share, source="spark").run(flags):
        validation.record("rows", name, check_result("rows", name, res))
    return bad


def _stage(spark, raw, bad: dict[int, list[str]], schema: pa.Schema, tmp: Path) -> tuple[list[Path], pa.Table]:
    """Every row written once by the executors, flagged kept or quarantined; returns the kept part
    files and the quarantined rows (in row order, in the source's Arrow types)."""
    from pyspark.sql import functions as F

    ids = spark.createDataFrame([(row, True) for row in sorted(bad)], f"{ROW} long, {BAD} boolean")
    flagged = raw.join(F.broadcast(ids), ROW, "left").fillna(False, subset=[BAD])
    out = tmp / "rows"
    flagged.select(ROW, *[_col(n) for n in schema.names], BAD).sortWithinPartitions(BAD, ROW).write.partitionBy(
        BAD
    ).parquet(str(out))
    kept = sorted((out / f"{BAD}=false").glob("part-*.parquet"))
    quarantined = sorted((out / f"{BAD}=true").glob("part-*.parquet"))
    arrays = {ROW: pa.int64(), **{f.name: f.type for f in schema}}
    if not quarantined:
        return kept, pa.table({name: pa.array([], kind) for name, kind in arrays.items()})
    table = pa.concat_tables([pq.read_table(p) for p in quarantined]).sort_by(ROW)
    return kept, pa.table({name: table.column(name).cast(kind) for name, kind in arrays.items()})


def _row_range(part: Path) -> tuple[int, int] | None:
    meta = pq.ParquetFile(part).metadata
    if meta.num_rows == 0:
        return None
    index = meta.schema.names.index(ROW)
    stats = [meta.row_group(i).column(index).statistics for i in range(meta.num_row_groups)]
    return min(s.min for s in stats), max(s.max for s in stats)


def _in_row_order(spark, parts: list[Path], tmp: Path) -> list[Path]:
    """The kept part files in row order. Each normally holds one run of consecutive rows (one file
    split per partition); if runs interleave, Spark range-partitions the rows first."""
    ranges = _ranges(parts)
    if all(a[1] < b[0] for (a, _), (b, _) in zip(ranges, ranges[1:], strict=False)):
        return [p for _, p in ranges]
    log.info("partitions interleave rows; sorting the kept rows on Spark")
    out = tmp / "sorted"
    frame = spark.read.parquet(*[str(p) for p in parts])
    frame.repartitionByRange(max(len(parts), 1), ROW).sortWithinPartitions(ROW).write.parquet(str(out))
    return [p for _, p in _ranges(sorted(out.glob("part-*.parquet")))]


def _ranges(parts: list[Path]) -> list[tuple[tuple[int, int], Path]]:
    """(first row, last row) of each non-empty part file, in row order."""
    found = [(_row_range(p), p) for p in parts]
    return sorted((r, p) for r, p in found if r is not None)


def _compact_types(spark, parts: list[Path], kept_schema: pa.Schema) -> pa.Schema:
    """What CompactTypes finds over the kept rows: minimum and maximum from the part files'
    statistics, and for float columns whether every value is whole, from one Spark aggregation."""
    from pyspark.sql import functions as F

    types = CompactTypes(kept_schema)
    tracked = [f.name for f in kept_schema if CompactTypes.tracked(f.type)]
    for part in parts:
        meta = pq.ParquetFile(part).metadata
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            for j in range(group.num_columns):
                column = group.column(j)
                name = column.path_in_schema
                if name in tracked and column.statistics is not None and column.statistics.has_min_max:
                    types.observe(name, float(column.statistics.min), float(column.statistics.max))
    floating = [f.name for f in kept_schema if f.name in tracked and pa.types.is_floating(f.type)]
    if floating and parts:
        whole = [F.min((_col(n) == F.round(_col(n))).cast("int")).alias(n) for n in floating]
        row = spark.read.parquet(*[str(p) for p in parts]).agg(*whole).collect()[0].asDict()
        for name in floating:
            if row[name] == 0:
                types.observe(name, None, None, fractional=True)
    return types.types()


def read_labels(clean_path: str, label: str, engine: EngineParams) -> np.ndarray:
    """The label column of the clean table in row order, read by Spark (and nothing else of it)."""
    with session(engine, "split") as spark:
        path = Path(clean_path)
        frame = _with_positions(spark, _scan(spark.read.parquet(str(path)), [label]), [path])
        table = frame.orderBy(ROW).select(_col(label)).toArrow()
    return table.column(label).cast(pq.read_schema(path).field(label).type).to_numpy()

"""The Spark engine: clean and split on Apache Spark, for tables that outgrow one machine.

The contract and its checks are the local engine's: the schema checks run on the schema (as
there), the row profile and the row hashes are the local engine's own code run on the executors
(over Arrow batches), the duplicate flags a Spark window over those hashes, and the same Great
Expectations suite validates them through GX's Spark data source, on the cluster.
What comes back to the driver is small: every check's result and the numbers of the rows to
quarantine. The driver then streams the source once, in bounded memory, and writes the files the
pipeline versions with the local engine's writer (`pipeline.engines.local.write`): one Parquet
file per output at its dvc.yaml path, in the same types and row groups, so the same rows give
the same files, byte for byte, whichever engine ran. (Spark's own writer would give a folder of
part files, which DVC would version differently and every reader downstream would need to
reassemble in row order; for 785-column tables it was also the slowest step here.)

Rows keep their position in the source (the `row` the quarantine reports and split assigns by).
Spark orders a scan's partitions by size, not position, so the position is rebuilt from each
row's file, the byte offset of its split and its rank inside the split.

The master is `SPARK_MASTER` from the environment when set (what an Airflow task takes from the
Connection `spark_default`), else `engine.spark_master` in params. On a cluster the source must
be on a filesystem the driver and every executor see (the shared workspace, HDFS, S3).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.batches import open_source
from pipeline.contract import is_mixed
from pipeline.engines import OpenSink, local
from pipeline.errors import StageError
from pipeline.params import CleanParams, DataParams, EngineParams
from pipeline.tables import TableError
from pipeline.validation import (
    ROW_REASONS,
    GxView,
    StreamValidation,
    check_result,
    expectations,
    silent_context,
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
    }
    if url.startswith("local"):
        conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
    builder = SparkSession.builder.master(url).appName(f"triton-retrain {app}")
    for key, value in {**conf, **engine.spark_conf}.items():
        builder = builder.config(key, value)
    log.info("Spark master %s", url)
    # py4j's finalizers log "Closing down clientserver connection" at INFO, even at interpreter exit
    # after the log streams are closed ("--- Logging error ---"); the line tells a user nothing.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        yield spark
    finally:
        spark.stop()


def _col(name: str):
    from pyspark.sql import functions as F

    return F.col(f"`{name}`")


def _with_positions(spark, frame, files: list[Path], located=None):
    """`frame` (with the scan's file, split offset and monotonically increasing id) plus ROW, the
    row's position in the source, files in the order `files` lists them.

    Within a file split the rows are read in order and their ids are consecutive; so ROW = (rows in
    the splits before this one) + (id - the split's first id). `located`: the same scan's
    locating columns, when `frame` is costly to compute twice (Parquet reads only those)."""
    from pyspark.sql import functions as F

    splits = (
        (frame if located is None else located)
        .groupBy("__file", "__block")
        .agg(F.min("__rank").alias("__first"), F.count("*").alias("__n"))
    )
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
    """The source as one DataFrame, with what locates each row (its file, split and rank)."""
    parquet = [str(p) for p in files if p.suffix.lower() == ".parquet"]
    csv = [str(p) for p in files if p.suffix.lower() != ".parquet"]
    frames = []
    if parquet:
        frames.append(spark.read.option("mergeSchema", "true").parquet(*parquet))
    if csv:  # the types the local engine reads CSV with (features as float64)
        frames.append(spark.read.csv(csv, header=True, schema=_spark_schema(schema), mode="FAILFAST"))
    frame = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1], allowMissingColumns=True)
    return _scan(frame, schema.names)


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


def _profile(spark, scan, files: list[Path], names: list[str], label: str, features: list[str]):
    """The rows view, computed by the local engine's own code on the executors: for each Arrow
    batch of the source, `pipeline.validation.profile_batch` (label, null and non-finite counts,
    min, max) and `pipeline.rowhash.RowHasher` (a 64-bit hash of the whole row); then every row's
    position (ROW) and the duplicate flag (a row with the same hash as a row before it).

    Only these few columns leave the Python workers, so Spark never plans an expression over the
    785 columns of an image table (as SQL, the analyser and code generator took minutes for it,
    whatever the row count). Executors import `pipeline`: on a cluster, install the project there.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    label_type = scan.schema[label].dataType.simpleString()
    out = (
        "__file string, __block long, __rank long, "
        f"label {label_type}, null_features int, nonfinite_features int, feature_min double, feature_max double, "
        "__hash long"
    )

    def profile(batches):  # runs on the executors
        from pipeline.rowhash import RowHasher
        from pipeline.validation import profile_batch

        hasher = None
        for batch in batches:
            row = batch.select(names)
            hasher = hasher or RowHasher(row.schema)  # the scan's types: the same on every executor
            rows = profile_batch(row, label, features)
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column("__file"),
                    batch.column("__block"),
                    batch.column("__rank"),
                    batch.column(label),
                    pa.array(rows["null_features"].to_numpy(), pa.int32()),
                    pa.array(rows["nonfinite_features"].to_numpy(), pa.int32()),
                    pa.array(rows["feature_min"].to_numpy(), pa.float64()),
                    pa.array(rows["feature_max"].to_numpy(), pa.float64()),
                    pa.array(hasher.hash(row).view(np.int64)),
                ],
                names=["__file", "__block", "__rank", "label", "null_features", "nonfinite_features"]
                + ["feature_min", "feature_max", "__hash"],
            )

    located = scan.select("__file", "__block", "__rank")
    narrow = _with_positions(spark, scan.mapInArrow(profile, out), files, located)
    first = Window.partitionBy("__hash").orderBy(ROW)
    return narrow.withColumn("duplicate", F.row_number().over(first) > 1).drop("__hash")


def clean(
    source: str, contract: DataParams, params: CleanParams, engine: EngineParams, open_sink: OpenSink
) -> tuple[dict, str]:
    """The Spark counterpart of pipeline.engines.local.clean: the same checks and the same files."""
    from pyspark import StorageLevel

    stream = open_source(source, contract, params.batch_mb)  # the schema, as the local engine reads it
    validation = StreamValidation(stream.schema, contract, params)
    local.check_schema(validation, stream, contract)
    if is_mixed(validation.contracts):
        # The Spark rows view profiles numeric features only; categorical columns, category sets
        # and missing-value policies are checked by the local engine for now.
        raise StageError(
            "engine spark does not support categorical columns or missing-value policies (data.missing, "
            "data.columns) yet; set engine.name: local for this table (it streams in bounded memory)"
        )
    with session(engine, "clean") as spark:
        scan = _read(spark, list(stream.files), stream.schema)
        files = list(stream.files)
        profile = _profile(spark, scan, files, stream.schema.names, contract.label, validation.features).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        try:
            bad, rows_in = _validate(profile, validation, contract, params)
        finally:
            profile.unpersist()
    log.info("validated %d rows on Spark (%s): %d to quarantine", rows_in, master(engine), len(bad))
    keys = np.array(sorted(bad), dtype=np.int64)

    def bad_rows(batch: pa.RecordBatch, offset: int) -> dict[int, list[str]]:
        lo, hi = np.searchsorted(keys, [offset, offset + batch.num_rows])
        return {int(row): bad[int(row)] for row in keys[lo:hi]}

    def finish():
        validation.rows_in = rows_in
        return validation.tally()

    return local.write(stream, validation, contract, open_sink, bad_rows, finish)


def _validate(
    profile, validation: StreamValidation, contract: DataParams, params: CleanParams
) -> tuple[dict[int, list[str]], int]:
    """The rows suite through GX's Spark data source, and the whole-table checks on the same
    frame; records every result in `validation`; returns the bad rows {row: failed checks, in the
    suite's order} and the row count."""
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
    rows_in = None
    for name, res in GxView(context, "spark_count", counted, source="spark").run(profile.select(ROW)):
        validation.record("table", name, check_result("table", name, res))
        rows_in = (res.result or {}).get("observed_value")
    share = [c for c in suite["rows"] if c[0] not in ROW_REASONS]
    flags = profile.select(F.col("duplicate").cast("int").alias("duplicate"))
    for name, res in GxView(context, "spark_share", share, source="spark").run(flags):
        validation.record("rows", name, check_result("rows", name, res))
    return bad, int(profile.count() if rows_in is None else rows_in)


def read_labels(clean_path: str, label: str, engine: EngineParams) -> np.ndarray:
    """The label column of the clean table in row order, read by Spark (and nothing else of it)."""
    with session(engine, "split") as spark:
        path = Path(clean_path)
        frame = _with_positions(spark, _scan(spark.read.parquet(str(path)), [label]), [path])
        table = frame.orderBy(ROW).select(_col(label)).toArrow()
    return table.column(label).cast(pq.read_schema(path).field(label).type).to_numpy()

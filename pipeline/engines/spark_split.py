"""The Spark engine's split: the local engine's assignment (`pipeline.stratify`), computed on the executors.

1. each task reads the label column of one part of the clean table and gives every row its key
   (SplitMix64 of its position, `stratify.position_keys`);
2. Spark sorts the rows by (label, key), a distributed sort; the sorted partitions' counts per
   class come to the driver (a row per partition and class), which works out how many rows of each
   class go to test, val and train (`stratify.allocate`: scikit-learn's stratified counts);
3. a row's rank in its class is its place in the sorted order (the rows of the partitions before
   its own, plus its place in its partition) minus the rows of the classes before its own;
4. the first training row of each class (one row per class) gives StratifiedKFold's fold counts;
5. each task assigns its rows by rank (`stratify.assign`) and the rows of each clean part are
   written as the same part of the assignment (`split_local.write_part`, the local engine's writer).

What reaches the driver: the parts' row counts (from their footers), the counts per partition and
class, one row per class, one row per part. Never a label or a row number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import parts, stratify
from pipeline.engines import split_local
from pipeline.engines.spark_session import require_spark, session, size_shuffles
from pipeline.params import EngineParams, SplitParams

KEYED_ROW_BYTES = 40  # a row of the sort: part, row, label, key, and the partition's ids
PARTITION_BITS = 33  # monotonically_increasing_id: the partition in the bits above, the row in it below


def split(clean_path: str, label: str, params: SplitParams, engine: EngineParams, folder: str) -> stratify.Allocation:
    """Assign the rows of the clean table at `clean_path` and write the parts into `folder`."""
    require_spark()
    files = [str(p) for p in parts.part_files(clean_path)]
    counts = parts.part_rows(clean_path)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
    spark_type = _spark_type(parts.schema(clean_path).field(label).type)
    with session(engine, "split") as spark:
        size_shuffles(spark, engine, sum(counts), KEYED_ROW_BYTES)
        listing = spark.sparkContext.parallelize(list(zip(range(len(files)), files, starts, strict=True)), len(files))
        frame = spark.createDataFrame(listing, "part int, path string, start long")
        keyed = frame.mapInArrow(Keyer(label, params.seed).keys, f"part int, row long, label {spark_type}, key long")
        ranked, allocation, cached = _ranked(keyed, params)
        allocation = stratify.with_folds(
            allocation, _first_training_rows(ranked, allocation, sum(counts)), len(params.folds)
        )
        assigner = Assigner(allocation, folder, starts, counts)

        def write(table: pa.Table) -> pa.Table:  # a plain function: PySpark counts a method's `self`
            return assigner.write(table)

        select = ranked.select("part", "row", "label", "rank")
        written = {
            r["part"]: r["rows"] for r in select.groupBy("part").applyInArrow(write, "part int, rows long").collect()
        }
        for frame in cached:
            frame.unpersist()
    for i, (start, n) in enumerate(zip(starts, counts, strict=True)):
        if i not in written:  # a clean part without rows has an assignment part without rows
            split_local.write_part(Path(folder) / parts.part_name(i), start, np.empty(0, np.int8), np.empty(0, np.int8))
        elif written[i] != n:
            raise RuntimeError(f"split part {i}: {written[i]} rows assigned, the clean part has {n}")
    return allocation


def _ranked(keyed, params: SplitParams):
    """Steps 2-3: the rows with their rank in their class (a distributed sort by label and key,
    and counts per partition and class), and the split counts per class."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    keyed = keyed.persist(StorageLevel.MEMORY_AND_DISK)  # the sort samples it, then sorts it
    ordered = (
        keyed.orderBy("label", "key")
        .withColumn("pid", F.spark_partition_id())
        .withColumn("mid", F.monotonically_increasing_id())
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    sizes = ordered.groupBy("pid", "label").count().collect()  # a row per class and partition
    per_class: dict = {}
    for r in sizes:
        per_class[r["label"]] = per_class.get(r["label"], 0) + r["count"]
    classes = np.array(sorted(per_class))
    n_per_class = np.array([per_class[c] for c in classes.tolist()], np.int64)
    split_local.check_classes(classes, n_per_class, params)
    allocation = stratify.allocate(classes, n_per_class, params.val_fraction, params.test_fraction, params.seed)
    # Spark orders long, double and string labels as Python sorts them: class c's rows hold the
    # places from the rows of the classes before it on, in the sorted order.
    class_start = dict(zip(classes.tolist(), (np.cumsum(n_per_class) - n_per_class).tolist(), strict=True))
    place = _lookup(_partition_offsets(sizes), "pid") + (
        F.col("mid") - F.shiftleft(F.col("pid").cast("long"), PARTITION_BITS)
    )
    return ordered.withColumn("rank", place - _lookup(class_start, "label")), allocation, (ordered, keyed)


def _first_training_rows(ranked, allocation: stratify.Allocation, rows: int) -> np.ndarray:
    """Step 4: each class's first training row (by position; `rows` for a class without one)."""
    from pyspark.sql import functions as F

    classes = allocation.classes.tolist()
    cut = {c: int(allocation.test[i] + allocation.val[i]) for i, c in enumerate(classes)}
    training = ranked.where(F.col("rank") >= _lookup(cut, "label"))
    first = {r["label"]: r["first"] for r in training.groupBy("label").agg(F.min("row").alias("first")).collect()}
    return np.array([first.get(c, rows) for c in classes], np.int64)


@dataclass(frozen=True)
class Keyer:
    label: str
    seed: int

    def keys(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Step 1, on an executor: each listed part's rows with their position, label and key."""
        for batch in batches:
            for part, path, start in zip(*(batch.column(i).to_pylist() for i in range(3)), strict=True):
                labels = pq.read_table(path, columns=[self.label]).column(self.label).combine_chunks()
                rows = np.arange(start, start + len(labels), dtype=np.int64)
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(np.full(len(rows), part, np.int32)),
                        pa.array(rows),
                        _spark_values(labels),
                        pa.array(stratify.position_keys(rows, self.seed)),
                    ],
                    names=["part", "row", "label", "key"],
                )


@dataclass(frozen=True)
class Assigner:
    allocation: stratify.Allocation
    folder: str
    starts: list[int]
    counts: list[int]

    def write(self, table: pa.Table) -> pa.Table:
        """Step 5, on an executor: the rows of one clean part, assigned by rank, written as its part."""
        part = table.column("part")[0].as_py()
        table = table.sort_by("row")
        rows = table.column("row").to_numpy()
        start, n = self.starts[part], self.counts[part]
        if len(rows) != n or (n and (rows[0] != start or rows[-1] != start + n - 1)):
            raise RuntimeError(f"split part {part}: rows {rows[:3]}... do not cover {start}..{start + n - 1}")
        rank = table.column("rank").to_numpy()
        split, fold = np.empty(n, np.int8), np.empty(n, np.int8)
        code = pd.Index(self.allocation.classes).get_indexer(table.column("label").to_pandas())
        for c in np.unique(code):
            mine = code == c
            split[mine], fold[mine] = stratify.assign(rank[mine], self.allocation, int(c))
        split_local.write_part(Path(self.folder) / parts.part_name(part), start, split, fold)
        return pa.table({"part": pa.array([part], pa.int32()), "rows": pa.array([n], pa.int64())})


def _partition_offsets(sizes: list) -> dict[int, int]:
    """Rows in the sorted partitions before each one, from the (pid, label, count) rows."""
    rows: dict[int, int] = {}
    for r in sizes:
        rows[r["pid"]] = rows.get(r["pid"], 0) + r["count"]
    offsets, total = {}, 0
    for pid in sorted(rows):
        offsets[pid], total = total, total + rows[pid]
    return offsets


def _lookup(values: dict, column: str):
    """`values[column]` as a Spark expression (a literal map; a few entries: one per class)."""
    from pyspark.sql import functions as F

    return F.element_at(F.create_map(*[F.lit(v) for kv in values.items() for v in kv]), F.col(column))


def _spark_type(t: pa.DataType) -> str:
    """The Spark type a label column travels as (Spark has no unsigned integers)."""
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "long"
    if pa.types.is_floating(t):
        return "double"
    return "string"


def _spark_values(labels: pa.Array) -> pa.Array:
    t = labels.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return labels.cast(pa.int64())
    if pa.types.is_floating(t):
        return labels.cast(pa.float64())
    return labels.cast(pa.string())

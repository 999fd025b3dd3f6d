"""split in one process: the labels in memory (one byte a row for digit labels), the rest per class.

The assignment is `pipeline.stratify`'s: counts from the class counts, rows by their keyed rank in
their class (a NumPy sort per class here). The output has one part per part of the clean table,
each written by `write_part`, which Spark's executors call too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import stratify
from pipeline.atomic import current_umask
from pipeline.errors import StageError
from pipeline.params import SplitParams

# Row numbers do not repeat: a dictionary only costs the writer memory; bounded row groups.
WRITE_OPTIONS = {"use_dictionary": ["split"], "row_group_size": 65_536}
SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64()),
        pa.field("split", pa.dictionary(pa.int8(), pa.string())),
        pa.field("fold", pa.int8()),
    ]
)


def check_classes(classes: np.ndarray, counts: np.ndarray, params: SplitParams) -> None:
    """Each class needs a row in every split and at least one per fold in the training part."""
    k = len(params.folds)
    need = k + 2
    rare = np.flatnonzero(counts < need)
    if len(rare):
        c = rare[np.argmax(counts[rare])]  # the first that value_counts() would list
        raise StageError(
            f"class {classes[c : c + 1].tolist()[0]!r} has only {counts[c]} row(s); a stratified split with {k} folds "
            f"needs at least {need} per class. Add data, or lower the number of split.folds."
        )


def assign(labels: np.ndarray, params: SplitParams) -> tuple[np.ndarray, np.ndarray, stratify.Allocation]:
    """Each row's split code (0 train, 1 val, 2 test) and fold (-1 outside train), and the counts."""
    classes, codes, counts, _ = stratify.class_codes(labels)
    check_classes(classes, counts, params)
    allocation = stratify.allocate(classes, counts, params.val_fraction, params.test_fraction, params.seed)
    rank = np.empty(len(labels), np.int64 if len(labels) >= 2**31 else np.int32)
    first_train = np.full(len(classes), len(labels), np.int64)
    for c, rows in stratify.class_positions(codes, counts):
        rank[rows] = stratify.ranks(stratify.position_keys(rows, params.seed))
        train = rows[rank[rows] >= allocation.test[c] + allocation.val[c]]
        first_train[c] = train[0] if len(train) else len(labels)
    allocation = stratify.with_folds(allocation, first_train, len(params.folds))
    split = np.empty(len(labels), np.int8)
    fold = np.empty(len(labels), np.int8)
    for c, rows in stratify.class_positions(codes, counts):
        split[rows], fold[rows] = stratify.assign(rank[rows], allocation, c)
    return split, fold, allocation


def table(start: int, split: np.ndarray, fold: np.ndarray) -> pa.Table:
    """The assignment of rows start.. as the stage writes it."""
    codes = pa.DictionaryArray.from_arrays(pa.array(split, pa.int8()), pa.array(stratify.SPLITS))
    rows = pa.array(np.arange(start, start + len(split), dtype=np.int64))
    return pa.Table.from_arrays([rows, codes, pa.array(fold, pa.int8())], schema=SCHEMA)


def write_part(path: str | Path, start: int, split: np.ndarray, fold: np.ndarray) -> None:
    """One part of the assignment (rows start.. of the clean table), written whole."""
    pq.write_table(table(start, split, fold), path, **WRITE_OPTIONS)  # type: ignore[arg-type]
    Path(path).chmod(0o666 & ~current_umask())


def metrics(allocation: stratify.Allocation) -> dict:
    """Rows per class in each split and rows per fold, for the metrics file."""
    out: dict = {"rows": {s: int(getattr(allocation, s).sum()) for s in stratify.SPLITS}}
    for s in stratify.SPLITS:
        out[s] = {str(c): int(n) for c, n in zip(allocation.classes.tolist(), getattr(allocation, s), strict=True) if n}
    out["folds"] = {str(f): int(n) for f, n in enumerate(allocation.folds.sum(axis=1))}
    return out

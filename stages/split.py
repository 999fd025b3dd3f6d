"""split: stratified train/validation/test assignment, plus k-fold ids over the training part.

Only the label column of the clean table is read (a row's id is its position), never the
features. The output is an assignment table (`row`, `split`, `fold`) rather than three copies of
the data: row `i` of the clean table goes to `split` (train | val | test); training rows also
carry the fold (0..k-1) they are held out in during cross-validation, other rows carry -1. It is
a folder of Parquet parts, part i covering the rows of the clean table's part i.

Which rows go where is `pipeline.stratify`'s: the class counts scikit-learn's stratified splits
give, filled by each row's keyed rank within its class, the same on either engine.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline import atomic, parts, stratify
from pipeline.engines import split_local
from pipeline.params import DataParams, EngineParams, SplitParams
from stages import _cli

log = logging.getLogger(__name__)

SPLITS = stratify.SPLITS


def split_stratified(labels: np.ndarray, params: SplitParams) -> pd.DataFrame:
    """Assign each row to a split and each training row to a fold, stratified by label."""
    split, fold, _ = split_local.assign(labels, params)
    return split_local.table(0, split, fold).to_pandas()


def run(labels: np.ndarray, params: SplitParams) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The assignment of an in-memory label column, and its metrics."""
    split, fold, allocation = split_local.assign(labels, params)
    metrics = split_local.metrics(allocation)
    log.info("split %s rows into %s", len(labels), metrics["rows"])
    return split_local.table(0, split, fold).to_pandas(), metrics


def run_file(clean_path: str, data: DataParams, params: SplitParams, engine: EngineParams, out: str) -> dict[str, Any]:
    """Split the clean table at `clean_path`, reading only its label column, on `engine`; write
    the assignment to `out` (a folder of parts, one per part of the clean table); return the metrics."""
    with atomic.atomic_dir(out) as folder:  # in place only once every part is written
        if engine.name == "spark":
            from pipeline.engines import spark_split

            allocation = spark_split.split(clean_path, data.label, params, engine, str(folder))
        else:
            allocation = _split_parts(clean_path, data.label, params, str(folder))
    metrics = split_local.metrics(allocation)
    log.info("split %s rows into %s", sum(metrics["rows"].values()), metrics["rows"])
    return metrics


def _split_parts(clean_path: str, label: str, params: SplitParams, folder: str) -> stratify.Allocation:
    labels = parts.read_column(clean_path, label)
    split, fold, allocation = split_local.assign(labels, params)
    start = 0
    for i, n in enumerate(parts.part_rows(clean_path)):
        split_local.write_part(
            f"{folder}/{parts.part_name(i)}", start, split[start : start + n], fold[start : start + n]
        )
        start += n
    return allocation


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--clean", required=True, help="clean table (a folder of Parquet parts)")
    p.add_argument("--out", required=True, help="assignment table to write (a folder of Parquet parts)")
    p.add_argument("--metrics", required=True, help="JSON metrics file")

    def body(args, params):
        metrics = run_file(args.clean, params.data, params.split, params.engine, args.out)
        atomic.write_json(args.metrics, metrics)

    _cli.main("split", body, p.parse_args())


if __name__ == "__main__":
    main()

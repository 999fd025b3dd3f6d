"""split: stratified train/validation/test assignment, plus k-fold ids over the training part.

Only the label column of the clean table is read (a row's id is its position), never the
features. The output is an assignment table (`row`, `split`, `fold`) rather than three copies of
the data: row `i` of the clean table goes to `split` (train | val | test); training rows also
carry the fold (0..k-1) they are held out in during cross-validation, other rows carry -1.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline import atomic, stratify
from pipeline.params import DataParams, EngineParams, SplitParams
from pipeline.tables import read_column, write_parquet
from stages import _cli

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Row numbers do not repeat: a dictionary only costs the writer memory; bounded row groups.
WRITE_OPTIONS = {"use_dictionary": ["split"], "row_group_size": 65_536}


def split_stratified(labels: np.ndarray, params: SplitParams) -> pd.DataFrame:
    """Assign each row to a split and each training row to a fold, stratified by label."""
    classes, _, counts, _ = stratify.class_codes(labels)
    k = len(params.folds)
    # Each class needs a row in every split and at least one per fold in the training part.
    need = k + 2
    rare = np.flatnonzero(counts < need)
    if len(rare):
        c = rare[np.argmax(counts[rare])]  # the first that value_counts() would list
        raise _cli.StageError(
            f"class {classes[c : c + 1].tolist()[0]!r} has only {counts[c]} row(s); a stratified split with {k} folds needs "
            f"at least {need} per class. Add data, or lower the number of split.folds."
        )
    held = params.val_fraction + params.test_fraction
    train, rest = stratify.shuffle_split(labels, held, params.seed)
    val, test = stratify.shuffle_split(labels[rest], params.test_fraction / held, params.seed)
    codes = np.empty(len(labels), dtype=np.int8)
    codes[train], codes[rest[val]], codes[rest[test]] = 0, 1, 2
    fold = np.full(len(labels), -1, dtype=np.int8)
    fold[train] = stratify.fold_ids(labels[train], k, params.seed)
    return pd.DataFrame(
        {
            "row": np.arange(len(labels), dtype=np.int64),
            "split": pd.Categorical.from_codes(codes, SPLITS),
            "fold": fold,
        }
    )


def class_counts(assignment: pd.DataFrame, labels: np.ndarray) -> dict[str, Any]:
    """Rows per class in each split and each fold, for the metrics file."""
    classes, label_codes, _, _ = stratify.class_codes(labels)
    codes = assignment["split"].cat.codes.to_numpy()
    out: dict[str, Any] = {"rows": {s: int((codes == i).sum()) for i, s in enumerate(SPLITS)}}
    for i, split in enumerate(SPLITS):
        per_class = np.bincount(label_codes[codes == i], minlength=len(classes))
        out[split] = {str(c): int(n) for c, n in zip(classes, per_class, strict=True) if n}
    folds = assignment["fold"].to_numpy()
    out["folds"] = {str(f): int(n) for f, n in enumerate(np.bincount(folds[folds >= 0]))}
    return out


def run(labels: np.ndarray, params: SplitParams) -> tuple[pd.DataFrame, dict[str, Any]]:
    assignment = split_stratified(labels, params)
    metrics = class_counts(assignment, labels)
    log.info("split %s rows into %s", len(labels), metrics["rows"])
    return assignment, metrics


def run_file(
    clean_path: str, data: DataParams, params: SplitParams, engine: EngineParams
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Split the clean table at `clean_path`, reading only its label column, on `engine`."""
    if engine.name == "spark":
        from pipeline.engines import spark

        labels = spark.read_labels(clean_path, data.label, engine)
    else:
        labels = read_column(clean_path, data.label)
    return run(labels, params)


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--clean", required=True, help="clean table (Parquet)")
    p.add_argument("--out", required=True, help="assignment table to write (Parquet)")
    p.add_argument("--metrics", required=True, help="JSON metrics file")

    def body(args, params):
        assignment, metrics = run_file(args.clean, params.data, params.split, params.engine)
        write_parquet(assignment, args.out, **WRITE_OPTIONS)
        atomic.write_json(args.metrics, metrics)

    _cli.main("split", body, p.parse_args())


if __name__ == "__main__":
    main()

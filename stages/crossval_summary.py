"""crossval_summary: mean and standard deviation of each metric over the cross-validation folds.

Reads every fold's metrics file in the folder and keeps the folds listed in `split.folds`; a file
left over from an earlier, larger k is ignored, and a listed fold without a file is an error. Each
file names its own fold, so the file naming lives only in dvc.yaml.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import atomic, metrics
from pipeline.params import Params
from stages import _cli

log = logging.getLogger(__name__)

# What every fold file holds: the scores evaluate reports too (same names, same definitions), and loss.
METRICS = (*metrics.NAMES, "loss")


def summarize(per_fold: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """{metric: {mean, std, folds: {id: value}}}; std is the sample standard deviation (n - 1),
    the spread one would expect between folds."""
    out: dict[str, Any] = {"k": len(per_fold)}
    for name in METRICS:
        values = {str(fold): float(per_fold[fold][name]) for fold in sorted(per_fold)}
        array = np.array(list(values.values()))
        std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
        out[name] = {"mean": float(array.mean()), "std": std, "folds": values}
    return out


def read_folds(folder: str | Path, folds: list[int]) -> dict[int, dict[str, Any]]:
    """The metrics of each wanted fold, found by the `fold` each file records."""
    found: dict[int, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("*.json")):
        scores = json.loads(path.read_text())
        fold = scores.get("fold")
        if fold not in folds:
            continue
        if fold in found:
            raise _cli.StageError(f"{folder}: two files hold fold {fold}; remove the stale one ({path.name})")
        missing = [name for name in METRICS if name not in scores]
        if missing:
            raise _cli.StageError(f"{path}: no {missing[0]!r}; rerun `dvc repro crossval`")
        found[fold] = scores
    absent = sorted(set(folds) - set(found))
    if absent:
        raise _cli.StageError(f"{folder}: no metrics for fold(s) {absent}; run `dvc repro crossval` first")
    return found


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--folds", required=True, help="folder of per-fold metrics files (JSON)")
    p.add_argument("--metrics", required=True, help="JSON summary to write")

    def body(args, params: Params) -> None:
        summary = summarize(read_folds(args.folds, params.split.folds))
        log.info(
            "cross-validation over %d folds: accuracy %.4f ± %.4f",
            summary["k"],
            summary["accuracy"]["mean"],
            summary["accuracy"]["std"],
        )
        atomic.write_json(args.metrics, summary)

    _cli.main("crossval_summary", body, p.parse_args())


if __name__ == "__main__":
    main()

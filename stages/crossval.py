"""crossval: train with one fold of the training rows held out, and score the model on that fold.

It runs the train stage's code unchanged (`pipeline.training.fit`) on the training rows outside
fold i. Early stopping watches the validation split, as in the train stage, and never the
held-out fold: choosing the epoch on the rows being scored would make the fold's score optimistic.
So the fold's numbers measure exactly what train's procedure delivers on rows it never saw.
Like train, it runs under torchrun (DDP) when `train.distributed` asks for more than one process.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from pipeline import atomic, distributed
from pipeline.models import config_for
from pipeline.params import Params
from pipeline.tables import read_parquet
from pipeline.training import assigned_rows, evaluate, fit
from stages import _cli

log = logging.getLogger(__name__)


def run(table: pd.DataFrame, assignment: pd.DataFrame, params: Params, fold: int) -> dict[str, Any]:
    """Metrics (accuracy, macro_f1, loss) of fold `fold`'s held-out training rows."""
    if fold not in params.split.folds:
        raise _cli.StageError(f"fold {fold} is not one of split.folds {params.split.folds}")
    rows, assignment = assigned_rows(table, assignment, params.data)
    split, folds = assignment["split"].to_numpy(), assignment["fold"].to_numpy()
    train, held_out = rows.take((split == "train") & (folds != fold)), rows.take((split == "train") & (folds == fold))
    val = rows.take(split == "val")
    if len(held_out) == 0 or len(train) == 0 or len(val) == 0:
        raise _cli.StageError(
            f"fold {fold}: {len(train)} training, {len(held_out)} held-out and {len(val)} val rows; "
            "every part needs rows. Rerun split with the current split.folds."
        )
    config = config_for(params.train.model, params.data, rows.x.shape[1])
    log.info("fold %d: training on %d rows, scoring %d held-out rows", fold, len(train), len(held_out))
    result = fit(config, train, val, params.train, params.data)
    scores = evaluate(result.model, *held_out.tensors(), config.n_classes)
    log.info(
        "fold %d: accuracy %.4f, macro F1 %.4f, loss %.4f", fold, scores["accuracy"], scores["macro_f1"], scores["loss"]
    )
    return {"fold": fold, **scores, "rows": len(held_out), "epochs": result.best_epoch + 1}


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--fold", type=int, required=True, help="the fold id to hold out (one of split.folds)")
    _cli.add_split_inputs(p)
    p.add_argument("--metrics", required=True, help="JSON metrics file for this fold")

    def body(args, params: Params) -> None:
        distributed.relaunch_under_torchrun(params.train.distributed, "stages.crossval")  # returns if not needed
        with distributed.session(params.train.device) as world:
            metrics = run(read_parquet(args.clean), read_parquet(args.split), params, args.fold)
            if world.main:
                atomic.write_json(args.metrics, metrics)

    _cli.main("crossval", body, p.parse_args())


if __name__ == "__main__":
    main()

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

from pipeline import atomic, distributed, privacy
from pipeline.compute import device_tensors
from pipeline.models import config_for
from pipeline.params import DataParams, Params, SplitParams, TrainParams
from pipeline.rows import SplitTable
from pipeline.training import evaluate, fit
from stages import _cli

log = logging.getLogger(__name__)


def run(table: SplitTable, data: DataParams, train: TrainParams, split: SplitParams, fold: int) -> dict[str, Any]:
    """Metrics (loss and `pipeline.metrics`' scores) of fold `fold`'s held-out training rows."""
    if fold not in split.folds:
        raise _cli.StageError(f"fold {fold} is not one of split.folds {split.folds}")
    training = table.splits == "train"
    masks = {
        "train": training & (table.folds != fold),
        "held_out": training & (table.folds == fold),
        "val": table.splits == "val",
    }
    counts = {name: int(mask.sum()) for name, mask in masks.items()}
    if min(counts.values()) == 0:
        raise _cli.StageError(
            f"fold {fold}: {counts['train']} training, {counts['held_out']} held-out and {counts['val']} val rows; "
            "every part needs rows. Rerun split with the current split.folds."
        )
    # Only these rows are read; a mixed table's transform is fitted on this fold's training rows.
    parts, _ = table.fitted_rows("train", **masks)
    config = privacy.private_config(config_for(train.model, data, parts["train"].x.shape[1]), train.privacy)
    log.info("fold %d: training on %d rows, scoring %d held-out rows", fold, counts["train"], counts["held_out"])
    result = fit(config, parts["train"], parts["val"], train, data)
    scores = evaluate(result.model, *device_tensors(parts["held_out"]), config.n_classes)
    log.info(
        "fold %d: accuracy %.4f, f1_macro %.4f, loss %.4f", fold, scores["accuracy"], scores["f1_macro"], scores["loss"]
    )
    return {"fold": fold, **scores, "rows": counts["held_out"], "epochs": result.best_epoch + 1}


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--fold", type=int, required=True, help="the fold id to hold out (one of split.folds)")
    _cli.add_split_inputs(p)
    p.add_argument("--metrics", required=True, help="JSON metrics file for this fold")

    def body(args, params: Params) -> None:
        distributed.relaunch_under_torchrun(params.train.distributed, "stages.crossval")  # returns if not needed
        with distributed.session(params.train.device) as world:
            table = SplitTable.open(args.clean, args.split, params.data)
            metrics = run(table, params.data, params.train, params.split, args.fold)
            if world.main:
                atomic.write_json(args.metrics, metrics)

    _cli.main("crossval", body, p.parse_args())


if __name__ == "__main__":
    main()

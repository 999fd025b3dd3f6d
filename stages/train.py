"""train: fit the model on the train split, early-stopping on the validation split.

Writes the model file (architecture config + state dict + the resolved train params + the kept
weights' validation metrics), per-epoch metrics and curves through DVCLive, and a checkpoint (every
`train.checkpoint_interval_s` and after the last epoch) from which a rerun resumes after a crash.
With `train.distributed` asking for more than one process it re-executes itself under torchrun
(DDP); rank 0 writes every file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

from pipeline import distributed, privacy
from pipeline.models import ModelConfig, config_for, save_model
from pipeline.params import DataParams, Params, TrainParams
from pipeline.rows import SplitTable
from pipeline.training import EpochHook, FitResult, fit
from stages import _cli

log = logging.getLogger(__name__)


class TrainResult(NamedTuple):
    fit: FitResult
    config: ModelConfig
    transform: dict[str, Any] | None  # fitted on the train split (mixed tables); stored in the model file


def run(
    table: SplitTable,
    data: DataParams,
    train: TrainParams,
    checkpoint: str | Path | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train on the train split, early-stop on the val split."""
    # Only these rows are read; a mixed table's transform is fitted on the train split alone.
    parts, fitted = table.fitted_rows("train", train=table.splits == "train", val=table.splits == "val")
    config = privacy.private_config(config_for(train.model, data, parts["train"].x.shape[1]), train.privacy)
    log.info("training %s on %d rows, validating on %d", config.arch, len(parts["train"]), len(parts["val"]))
    result = fit(config, parts["train"], parts["val"], train, data, checkpoint, on_epoch, progress)
    log.info("kept epoch %d: %s", result.best_epoch + 1, _fmt(result.metrics))
    return TrainResult(result, config, fitted)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    _cli.add_split_inputs(p)
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint to resume from and rewrite (train.checkpoint_interval_s)"
    )
    p.add_argument("--live", required=True, help="DVCLive folder for per-epoch metrics and plots")

    def body(args, params: Params) -> None:
        from dvclive import Live

        distributed.relaunch_under_torchrun(params.train.distributed, "stages.train")  # returns if not needed

        def log_epoch(epoch: int, row: dict[str, float]) -> None:
            for name, value in row.items():
                live.log_metric(name, value)
            live.next_step()

        with distributed.session(params.train.device) as world:
            table = SplitTable.open(args.clean, args.split, params.data)
            if not world.main:  # rank 0 alone writes the metrics, the checkpoint and the model
                run(table, params.data, params.train, args.checkpoint)
                return
            # No dvc.yaml of its own and no experiment commits: dvc.yaml already declares these files.
            with Live(args.live, save_dvc_exp=False, dvcyaml=None) as live:
                result, config, fitted = run(table, params.data, params.train, args.checkpoint, log_epoch)
                for name, value in result.metrics.items():
                    live.log_metric(f"best/{name}", value, plot=False)
                live.log_metric("best/step", result.best_epoch, plot=False)
                if result.privacy is not None:  # epsilon spent over every epoch run, at that delta
                    for name in ("epsilon", "delta", "noise_multiplier"):
                        live.log_metric(f"privacy/{name}", result.privacy[name], plot=False)
            save_model(
                args.out,
                result.model,
                config,
                params=params.train.model_dump(mode="json"),
                metrics=result.metrics,
                epochs=result.best_epoch + 1,  # epochs trained when the kept weights were taken
                privacy=result.privacy,  # None: trained without differential privacy
                **({"transform": fitted} if fitted is not None else {}),
            )
            log.info("wrote %s", args.out)

    _cli.main("train", body, p.parse_args())


if __name__ == "__main__":
    main()

"""The training loop shared by the train and crossval stages.

`fit` trains one model on in-memory rows and returns the weights that scored best on the
validation rows. It is a plain function of (config, rows, params) so tests and both stages call the
same code:

- Rows live on the device as two tensors, the features in their stored dtype (uint8 pixels stay
  uint8; a batch becomes float32 once it is taken); each epoch indexes them with a seeded
  permutation, so no Python loop ever touches single samples. Image augmentation (random shifts
  and rotations) is one `affine_grid` + `grid_sample` call on the whole batch.
- The device is CUDA when present (params can force one); mixed precision (bf16 where the GPU
  supports it, else fp16 with loss scaling) is used on CUDA only.
- All randomness comes from `train.seed` through two generators whose states travel in the
  checkpoint, so a CPU run is repeatable bit for bit and a resumed run ends with exactly the weights
  of an uninterrupted one.
- The whole training state is written atomically to the checkpoint, on a background thread, after
  the epoch in which `train.checkpoint_interval_s` ran out (and after the last one). It carries a
  fingerprint of the model config, the params, the data, the device, the process count and this
  code; a checkpoint with another fingerprint, or one that cannot be read, is ignored (logged),
  never resumed.
- Under torchrun (`pipeline.distributed`) the processes split each epoch's rows, DDP averages the
  gradients, and rank 0 alone writes.
- With `train.privacy` on, the steps are DP-SGD steps (`pipeline.privacy`): Poisson batches from
  the same generator, per-row clipping and noise, and the accountant's history in the checkpoint.

The jobs live in modules of their own: the input scale (`scaling`), device, precision, threads and
deterministic kernels (`compute`), optimizers and schedule (`optimizers`), augmentation
(`augment`), the learner (`learner`), checkpoints (`checkpoints`) and the progress bar (`progress`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline import distributed
from pipeline.checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointWriter,
    cpu_copy,
    fingerprint,
    frozen_copy,
    read_checkpoint,
)
from pipeline.compute import cpu_threads, deterministic_kernels, device_tensors
from pipeline.distributed import ALONE, World
from pipeline.errors import StageError
from pipeline.learner import Learner
from pipeline.metrics import scores
from pipeline.models import ModelConfig, build_model
from pipeline.params import DataParams, TrainParams
from pipeline.progress import progress_bar, report
from pipeline.rows import Rows

log = logging.getLogger(__name__)

EVAL_BATCH = 4096  # rows per forward pass when scoring; big enough to be one pass on small sets

# Called after each epoch (and for each epoch replayed from a checkpoint): (epoch, metrics row).
EpochHook = Callable[[int, dict[str, float]], None]


class DivergedError(StageError):
    """The training loss stopped being a number (NaN or infinite): the run cannot recover."""


@dataclass
class FitResult:
    model: nn.Module  # the kept (best) weights, on CPU, in eval mode
    metrics: dict[str, float]  # validation metrics (val_loss, val_accuracy, val_f1_macro, ...) of the kept weights
    best_epoch: int  # index into history (0-based, = the DVCLive step) of the kept weights
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch run
    resumed_from: int = 0  # epochs taken from a checkpoint (0 = fresh start)
    privacy: dict[str, Any] | None = None  # DP-SGD: epsilon spent, delta, noise... (None: trained without)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, world: World = ALONE) -> torch.Tensor:
    """Logits of `model` for every row of x; with several processes each scores rows[rank::size]
    and every process gets all of them back, in order."""
    model.eval()
    part = x[world.rank :: world.size]
    logits = torch.cat([model(part[i : i + EVAL_BATCH].float()).float() for i in range(0, len(part), EVAL_BATCH)])
    return distributed.gather_rows(logits, len(x), world)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, world: World = ALONE
) -> dict[str, float]:
    """Cross-entropy (no label smoothing) of `model` on (x, y), and the project's one set of
    classification scores (`pipeline.metrics`, the numbers evaluate and the gate report too); the
    same numbers on every process."""
    logits = predict_logits(model, x, world)
    loss = F.cross_entropy(logits, y).item()
    predicted = logits.argmax(1).cpu().numpy()
    return {"loss": loss, **scores(y.cpu().numpy(), predicted, n_classes)}


def _score(metric: str, row: dict[str, float]) -> list[float]:
    """Early-stopping score, higher is better, compared as a list: accuracy ties (common on small
    validation sets) go to the lower loss."""
    return [row["val_accuracy"], -row["val_loss"]] if metric == "val_accuracy" else [-row["val_loss"]]


def fit(
    config: ModelConfig,
    train: Rows,
    val: Rows,
    params: TrainParams,
    data: DataParams,
    checkpoint: str | Path | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Train a model of `config` on `train`, early-stopping on `val`; return the best weights.

    `checkpoint`: resume from this file when it matches this run, and rewrite it after every
    epoch. `on_epoch` sees every epoch's metrics row, replayed ones first after a resume (so a
    metrics log rebuilt from it equals an uninterrupted run's). `progress`: a progress bar
    (default: when stderr is a terminal) instead of one log line per epoch.

    Under torchrun (a process group is up) every process calls `fit` with the same arguments;
    only rank 0 reads and writes the checkpoint and calls `on_epoch`, and every process returns
    the same result.
    """
    world = distributed.current()
    learner = Learner(config, train, params, data, world)
    device = learner.device
    key = fingerprint(config, params, data, device.type, world.size, train, val)
    path = Path(checkpoint) if checkpoint is not None else None
    state = read_checkpoint(path, key) if path is not None and world.main else None
    state = distributed.from_main(state, world)
    if state is not None:
        try:
            learner.restore(state)
            if world.main:
                log.info("resuming from %s after epoch %d", path, state["epoch"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
            # Right keys, wrong contents (e.g. tensors of another shape): start afresh from a
            # learner the failed restore has not touched.
            log.warning("ignoring checkpoint %s: its training state does not fit this model (%s)", path, error)
            learner, state = Learner(config, train, params, data, world), None
    if state is None:
        state = {"epoch": 0, "done": False, "best": None, "best_epoch": -1, "bad_epochs": 0, "history": []}
        state["best_state"], state["best_metrics"] = cpu_copy(learner.model.state_dict()), {}
    resumed_from = state["epoch"]
    history = [dict(row) for row in state["history"]]
    on_epoch = on_epoch if world.main else None
    for epoch, row in enumerate(history):
        if on_epoch is not None:
            on_epoch(epoch, row)

    x_train, y_train = device_tensors(train, device)
    x_val, y_val = device_tensors(val, device)
    last_write = time.monotonic()
    with (
        cpu_threads(params.cpu_threads),
        deterministic_kernels(device),
        progress_bar(params.epochs, resumed_from, progress if world.main else False) as bar,
        CheckpointWriter(path if world.main else None) as writer,
    ):
        while not state["done"]:
            epoch = state["epoch"]
            row = {"train_loss": learner.train_epoch(x_train, y_train)}
            if not math.isfinite(row["train_loss"]):
                raise DivergedError(
                    f"training diverged at epoch {epoch + 1}: the training loss is {row['train_loss']}. "
                    f"Lower train.optimizer.lr (now {params.optimizer.lr}) or raise train.schedule.warmup_fraction; "
                    "no model was written"
                )
            learner.sync()
            with learner.autocast():
                val_scores = evaluate(learner.model, x_val, y_val, config.n_classes, world)
            row |= {f"val_{k}": v for k, v in val_scores.items()} | {"lr": learner.optimizer.param_groups[0]["lr"]}
            if learner.private is not None:
                row["epsilon"] = learner.private.epsilon()  # spent so far: a curve beside the loss
            history.append(row)
            score = _score(params.early_stopping.metric, row)
            if state["best"] is None or score > state["best"]:
                best_metrics = {k: v for k, v in row.items() if k.startswith("val_")}
                state |= {"best": score, "best_epoch": epoch, "bad_epochs": 0, "best_metrics": best_metrics}
                state["best_state"] = cpu_copy(learner.model.state_dict())
            else:
                state["bad_epochs"] += 1
            stop = state["bad_epochs"] >= params.early_stopping.patience
            state |= {"epoch": epoch + 1, "history": history, "done": stop or epoch + 1 >= params.epochs}
            # By time, not epochs: tiny epochs are not slowed by writes, long ones are all kept. When
            # they are written changes nothing else, since a resume is exact from any epoch.
            due = state["done"] or time.monotonic() - last_write >= params.checkpoint_interval_s
            if distributed.agree(due, world, device):  # rank 0's clock decides for every process
                last_write = time.monotonic()
                snapshot = frozen_copy(learner.snapshot())  # on every process: it gathers random states
                if world.main:
                    # best_state is replaced, never changed in place, and history rows are final.
                    checkpoint_state = {**state, "history": list(history), **snapshot}
                    writer.submit(checkpoint_state | {"format": CHECKPOINT_FORMAT, "fingerprint": key})
            if world.main:
                report(bar, epoch + 1, params.epochs, row, stop)
            if on_epoch is not None:
                on_epoch(epoch, row)

    best = build_model(config)
    best.load_state_dict(state["best_state"])
    spent = learner.private.summary() if learner.private is not None else None
    return FitResult(best.eval(), dict(state["best_metrics"]), state["best_epoch"], history, resumed_from, spent)

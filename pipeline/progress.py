"""How training reports its epochs: a progress bar in a terminal, else one log line per epoch."""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


class NoBar:
    """Stands in for a tqdm bar when progress goes to the log instead."""

    def __enter__(self) -> NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass


def progress_bar(epochs: int, done: int, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=epochs, initial=done, unit="epoch", desc="train", leave=False)


def report(bar, epoch: int, epochs: int, row: dict[str, float], stopped: bool) -> None:
    if isinstance(bar, NoBar):
        log.info(
            "epoch %d/%d: train_loss %.4f  val_loss %.4f  val_accuracy %.4f  lr %.2e",
            epoch,
            epochs,
            row["train_loss"],
            row["val_loss"],
            row["val_accuracy"],
            row["lr"],
        )
    else:
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{row['val_accuracy']:.4f}", refresh=False)
        bar.update(1)
    if stopped:
        log.info("early stop after epoch %d: no improvement for the patience window", epoch)

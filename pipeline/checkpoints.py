"""The training checkpoint: the whole training state, written atomically on a background thread,
read back only when it belongs to this run (its fingerprint: model config, params, data, device,
process count and the training code) and only as plain data (`weights_only=True`)."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import atomic_path
from pipeline.models import ModelConfig
from pipeline.params import DataParams, TrainParams
from pipeline.rows import Rows

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "triton-retrain/checkpoint@3"  # @2: random states per process; @3: privacy accountant
# What a resumable checkpoint holds besides its format and fingerprint.
CHECKPOINT_KEYS = frozenset(
    {"epoch", "done", "best", "best_epoch", "bad_epochs", "history", "best_state", "best_metrics"}
    | {"model", "optimizer", "scheduler", "scaler", "rng", "privacy"}
)
# The code whose every change must invalidate a checkpoint (with pipeline/models/*.py): what makes
# the weights. An edited loop must not pick up weights the old one made.
TRAINING_CODE = ("training.py", "learner.py", "optimizers.py", "augment.py", "scaling.py", "compute.py", "privacy.py")


def fingerprint(
    config: ModelConfig, params: TrainParams, data: DataParams, device: str, world_size: int, *rows: Rows
) -> str:
    """What a checkpoint must match to be resumed: everything that changes the weights, the
    training code included (an edited loop must not pick up weights the old one made)."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    code = [*(here / name for name in TRAINING_CODE), *sorted((here / "models").glob("*.py"))]
    for source in code:
        digest.update(source.read_bytes())
    spec = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "train": params.model_dump(mode="json"),
        "data": data.model_dump(mode="json"),
        "device": device,
        "world_size": world_size,  # the data order and batches depend on the process count
        "torch": torch.__version__,
    }
    digest.update(json.dumps(spec, sort_keys=True).encode())
    for part in rows:
        digest.update(np.ascontiguousarray(part.x).data.cast("B"))  # hashed in place, no copy
        digest.update(np.ascontiguousarray(part.y).data.cast("B"))
    return digest.hexdigest()


def cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def read_checkpoint(path: Path, expected: str) -> dict[str, Any] | None:
    """The checkpoint's state if it belongs to this run, else None (with the reason logged).

    Read with weights_only=True: a file that would need to run code to load is refused, and
    since the checkpoint is only a cache it is then ignored (and overwritten), never executed.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        # An empty file (a crash before the first byte) raises a bare EOFError.
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        log.warning("ignoring checkpoint %s: cannot be loaded safely (%s)", path, reason)
        return None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        log.warning("ignoring checkpoint %s: not a training checkpoint of this project", path)
        return None
    if state.get("fingerprint") != expected:
        log.warning("ignoring stale checkpoint %s: it was made with other params, data, device or code", path)
        return None
    missing = sorted(CHECKPOINT_KEYS - state.keys())
    if missing:
        log.warning("ignoring checkpoint %s: incomplete, it lacks %s", path, ", ".join(missing))
        return None
    return state


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def frozen_copy(obj: Any) -> Any:
    """A copy that later training steps cannot change (optimizer states are updated in place)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: frozen_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(frozen_copy(v) for v in obj)
    return obj


class CheckpointWriter:
    """Writes checkpoints on one background thread, so serialising them overlaps the next epoch.

    Writes stay in order and at most one is in flight; leaving the block waits for the last one,
    also when training failed, so the last finished epoch is always on disk. A process killed
    mid-write leaves the previous checkpoint intact (atomic rename), one epoch older.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.pending: Future[None] | None = None
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> CheckpointWriter:
        if self.path is not None:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        return self

    def submit(self, state: dict[str, Any]) -> None:
        """Write `state` (which nothing may change any more) once the previous write is done."""
        if self.pool is None or self.path is None:
            return
        self._wait()
        self.pending = self.pool.submit(write_checkpoint, self.path, state)

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            try:
                self._wait()
            finally:
                self.pool.shutdown()

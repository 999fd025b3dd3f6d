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
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import math
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import distributed, models, privacy
from pipeline.atomic import atomic_path
from pipeline.distributed import ALONE, World
from pipeline.errors import StageError
from pipeline.metrics import scores
from pipeline.models import ModelConfig, build_model, set_input_scale
from pipeline.params import DataParams, TrainParams
from pipeline.rows import Rows

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "triton-retrain/checkpoint@3"  # @2: random states per process; @3: privacy accountant
# What a resumable checkpoint holds besides its format and fingerprint.
CHECKPOINT_KEYS = frozenset(
    {"epoch", "done", "best", "best_epoch", "bad_epochs", "history", "best_state", "best_metrics"}
    | {"model", "optimizer", "scheduler", "scaler", "rng", "privacy"}
)
EVAL_BATCH = 4096  # rows per forward pass when scoring; big enough to be one pass on small sets
STD_FLOOR = 1e-6  # a tabular feature with a smaller spread is left unscaled (constant in training)

# Called after each epoch (and for each epoch replayed from a checkpoint): (epoch, metrics row).
EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class FitResult:
    model: nn.Module  # the kept (best) weights, on CPU, in eval mode
    metrics: dict[str, float]  # validation metrics (val_loss, val_accuracy, val_f1_macro, ...) of the kept weights
    best_epoch: int  # index into history (0-based, = the DVCLive step) of the kept weights
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch run
    resumed_from: int = 0  # epochs taken from a checkpoint (0 = fresh start)
    privacy: dict[str, Any] | None = None  # DP-SGD: epsilon spent, delta, noise... (None: trained without)


# --- data ------------------------------------------------------------------------------------


def device_tensors(rows: Rows, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(features, int64 labels) on `device`. Features keep their stored dtype (uint8 pixels: a
    quarter of float32, and no copy at all on the CPU); each batch becomes float32 where it is used."""
    x = torch.from_numpy(np.ascontiguousarray(rows.x))
    return x.to(device), torch.from_numpy(np.ascontiguousarray(rows.y, np.int64)).to(device)


def input_scale(x: np.ndarray, data: DataParams) -> tuple[np.ndarray, np.ndarray]:
    """(offset, factor) per feature so that (x - offset) * factor is roughly unit scale.

    Images use one range for every pixel (data.value_range, else the training rows' min/max), so a
    pixel that is always blank in training is not blown up; tabular rows are standardised.
    """
    n = x.shape[1]
    if data.image_shape is not None:
        lo, hi = data.value_range if data.value_range is not None else (float(x.min()), float(x.max()))
        span = hi - lo if hi > lo else 1.0
        return np.full(n, lo, np.float32), np.full(n, 1.0 / span, np.float32)
    mean, std = column_moments(x)
    return mean.astype(np.float32), np.where(std > STD_FLOOR, 1.0 / np.maximum(std, STD_FLOOR), 1.0).astype(np.float32)


def column_moments(x: np.ndarray, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) standard deviation, accumulated in float64 over chunks of
    rows, so that no float64 copy of the whole table is made."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].astype(np.float64)
        total += part.sum(axis=0)
        squares += np.square(part).sum(axis=0)
    mean = total / len(x)
    return mean, np.sqrt(np.maximum(squares / len(x) - np.square(mean), 0.0))


def fingerprint(
    config: ModelConfig, params: TrainParams, data: DataParams, device: str, world_size: int, *rows: Rows
) -> str:
    """What a checkpoint must match to be resumed: everything that changes the weights, the
    training code included (an edited loop must not pick up weights the old one made)."""
    digest = hashlib.sha256()
    code = [Path(__file__), Path(privacy.__file__), *sorted(Path(models.__file__).parent.glob("*.py"))]
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


# --- pieces of the loop ----------------------------------------------------------------------


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU has it (no loss scaling needed), else fp16; None = full precision."""
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    opt = params.optimizer
    if opt.name == "sgd":
        sgd = _eager(torch.optim.SGD)
        return sgd(model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    cls = _eager(torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW)
    return cls(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)


_EAGER: dict[type, type] = {}
_Optimizer = TypeVar("_Optimizer", bound=torch.optim.Optimizer)


def _eager(optimizer: type[_Optimizer]) -> type[_Optimizer]:
    """`optimizer` without the wrappers torch puts around its methods for `torch.compile`.

    Those wrappers (`torch._disable_dynamo` on add_param_group, zero_grad, state_dict and
    load_state_dict; a graph break around step) import `torch._dynamo` on their first call: 1.2-1.6 s
    in every training process on a CPU host, for a compiler these stages never run. The subclass
    calls torch's own methods underneath them, and step keeps what its wrapper does in eager mode
    (gradients off unless the optimizer is `differentiable`); torch's step hooks and profiler
    records still wrap it. The weights after each step are bit for bit the stock optimizer's
    (`test_the_eager_optimizer_steps_exactly_like_torchs`)."""
    if optimizer in _EAGER:
        return _EAGER[optimizer]
    methods: dict[str, Any] = {
        name: inspect.unwrap(getattr(optimizer, name))
        for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
    }
    raw_step = inspect.unwrap(optimizer.step)

    def step(self: torch.optim.Optimizer, closure: Callable[[], float] | None = None) -> float | None:
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return raw_step(self, closure)

    methods["step"] = step
    _EAGER[optimizer] = type(optimizer.__name__, (optimizer,), methods)
    return _EAGER[optimizer]


def lr_factor(step: int, total: int, name: str, warmup_fraction: float) -> float:
    """Learning-rate multiplier at optimizer step `step` of `total` (a pure function of the step,
    so the scheduler's state is just a counter and resumes exactly)."""
    if name == "constant":
        return 1.0
    warmup = round(total * warmup_fraction) if name == "warmup_cosine" else 0
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, params: TrainParams, total_steps: int):
    schedule = params.schedule
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, schedule.name, schedule.warmup_fraction)
    )


def random_moves(
    n: int, max_shift: int, max_rotation: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(angle in radians [n], shift in whole pixels [n, 2]) for n images, drawn from `generator`
    on the CPU (so CPU and GPU runs draw the same numbers)."""
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_rotation)
    shift = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).float()
    return angle, shift


def augment_images(
    x: torch.Tensor,
    image_shape: list[int],
    background: float,
    max_shift: int,
    max_rotation: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Randomly shift (whole pixels) and rotate each image of a batch of flat rows, in one call."""
    return move_images(x, image_shape, background, *random_moves(x.shape[0], max_shift, max_rotation, generator))


def move_images(
    x: torch.Tensor, image_shape: list[int], background: float, angle: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """Rotate and shift each image of a batch of flat rows; areas moved in from outside the image
    take the background value (the value range's minimum)."""
    n, (h, w) = x.shape[0], image_shape
    cos, sin = angle.cos(), angle.sin()
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size.
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0] * 2 / w], 1), torch.stack([sin, cos, shift[:, 1] * 2 / h], 1)], 1
    ).to(x.device, x.dtype)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    moved = F.grid_sample((x - background).view(n, 1, h, w), grid, align_corners=False)
    return (moved + background).view(n, h * w)


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


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """torch's intra-op CPU threads for the duration of a fit (`train.cpu_threads`; 0 keeps
    torch's default of one per core), then the caller's setting again.

    One thread is the default because the models here are small: their operators are too short
    for a thread pool to pay off, and when any other process holds a core (another Airflow task,
    a second Celery worker process, the test suite) every operator waits for a thread that is not
    running. On 2 cores a crossval fold of the digits CNN took 7.9 s with one thread and 8.9 s with
    torch's default on an idle machine, 9.8 s vs 14.3 s beside one busy process, and 7-9 s vs
    35-85 s beside other jobs' benchmarks (`bench/train_threads.py`, README). torchrun sets
    OMP_NUM_THREADS=1 for the same reason."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Ask torch for deterministic kernels on CPU for the duration of a fit, then restore the
    caller's setting. (CUDA runs are fast rather than bit-exact; they would need a cuBLAS
    workspace setting made before CUDA starts.)"""
    import torch.utils.deterministic as deterministic

    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]  # set by torch at import; not in its stubs
    if device.type == "cpu" and not before:
        _use_deterministic_algorithms(True, warn_only=True)
        # Filling every new tensor with NaN (a debugging aid) cost ~5% of a step; our kernels
        # overwrite what they allocate.
        deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        _use_deterministic_algorithms(before, warn_only=warn_only)
        deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]


def _use_deterministic_algorithms(mode: bool, *, warn_only: bool) -> None:
    """`torch.use_deterministic_algorithms` without its import of the compiler stack.

    torch's function sets the kernels' flag and also `torch._inductor.config.deterministic`, whose
    import loads `torch._inductor` and `torch._dynamo` (1.2-1.6 s per training process on a CPU
    host) for a setting only compiled code reads. Nothing here compiles; where inductor is already
    loaded, torch's own function runs so that its config follows."""
    if "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


# --- checkpoints -----------------------------------------------------------------------------


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


def _frozen_copy(obj: Any) -> Any:
    """A copy that later training steps cannot change (optimizer states are updated in place)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _frozen_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_frozen_copy(v) for v in obj)
    return obj


class _CheckpointWriter:
    """Writes checkpoints on one background thread, so serialising them overlaps the next epoch.

    Writes stay in order and at most one is in flight; leaving the block waits for the last one,
    also when training failed, so the last finished epoch is always on disk. A process killed
    mid-write leaves the previous checkpoint intact (atomic rename), one epoch older.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.pending: Future[None] | None = None
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> _CheckpointWriter:
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


# --- the loop --------------------------------------------------------------------------------


class _Learner:
    """A model with everything that changes while it learns: optimizer, schedule, loss scaler and
    the random generators. `snapshot`/`restore` move all of it to and from plain data.

    With several processes (DDP) every process holds the whole model and all rows. Each epoch all
    of them draw the same permutation and deal it out like torch's DistributedSampler (padded to
    a multiple of the process count, then rows[rank::size]); `train.batch_size` stays the global
    batch, so each process steps on ceil(batch_size / size) rows and the schedule has the same
    number of steps as one process would take.
    """

    def __init__(
        self, config: ModelConfig, train: Rows, params: TrainParams, data: DataParams, world: World = ALONE
    ) -> None:
        self.world = world
        self.device = select_device(params.device)
        self.amp = autocast_dtype(self.device, params.mixed_precision)
        torch.manual_seed(params.seed)  # model init and dropout
        self.generator = torch.Generator().manual_seed(params.seed)  # data order and augmentation
        self.model = build_model(config)
        offset, factor = input_scale(train.x, data)
        set_input_scale(self.model, torch.from_numpy(offset), torch.from_numpy(factor))
        self.model.to(self.device)
        self.net: nn.Module = self.model  # what the training step calls
        if world.group:  # under torchrun, even with one process (e.g. to try NCCL on one GPU)
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index or torch.cuda.current_device()] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if world.rank > 0:
            torch.manual_seed(params.seed + world.rank)  # dropout masks differ between processes
        self.batch_size = -(-params.batch_size // world.size)  # rows per process and step
        self.optimizer = make_optimizer(self.model, params)
        shard = -(-len(train) // world.size)
        total_steps = math.ceil(shard / self.batch_size) * params.epochs
        self.scheduler = make_scheduler(self.optimizer, params, total_steps)
        self.private: privacy.PrivateSteps | None = None
        if params.privacy.enabled:
            # Full precision: per-row gradients under autocast come out in half precision and
            # would be clipped and summed there (and a loss scaler would scale what is clipped).
            self.amp = None
            self.private = privacy.PrivateSteps(
                self.model, self.optimizer, params.privacy, len(train), params.batch_size, params.epochs
            )
            self.net = self.private.net
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)
        self.augment = None
        shape = data.image_shape
        if params.augment.enabled and shape is not None:
            a, background = params.augment, float(offset[0])

            def augment(xb: torch.Tensor) -> torch.Tensor:
                # Draw for the global batch and keep this process's share: the generator stays in
                # step across processes and every image gets its own move.
                n = len(xb)
                angle, shift = random_moves(n * world.size, a.max_shift, a.max_rotation, self.generator)
                mine = slice(world.rank * n, (world.rank + 1) * n)
                return move_images(xb, shape, background, angle[mine], shift[mine])

            self.augment = augment

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()  # entering a disabled autocast still costs per step
        return torch.autocast(self.device.type, dtype=self.amp)

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if self.private is not None:
            loss = self.loss_fn(self.net(xb), yb) if len(yb) else None
            self.private.step(loss)
            self.scheduler.step()
            return loss.detach() if loss is not None else torch.zeros((), device=xb.device)
        with self.autocast():
            loss = self.loss_fn(self.net(xb), yb)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:  # fp16: scale the loss so small gradients do not flush to zero
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def shard(self, n: int) -> torch.Tensor:
        """This process's rows for one epoch, in a seeded random order drawn alike everywhere."""
        order = torch.randperm(n, generator=self.generator)
        size = self.world.size
        if size > 1:
            order = torch.cat([order, order[: -n % size]])  # pad so every process gets as many rows
            order = order[self.world.rank :: size]
        return order

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One pass over (x, y); returns the mean training loss over every process's rows."""
        self.net.train()
        batches: Iterator[torch.Tensor]
        if self.private is not None:  # Poisson batches of the training rows (one process)
            batches = (idx.to(x.device) for idx in self.private.batches(self.generator))
        else:
            order = self.shard(len(y)).to(x.device)
            batches = (order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size))
        losses, sizes = [], []  # batch losses stay on the device: no sync (and no extra op) per step
        for idx in batches:
            xb = x[idx].float()
            xb = xb if self.augment is None else self.augment(xb)
            losses.append(self.step(xb, y[idx]))
            sizes.append(len(idx))
        total = torch.stack(losses).double() @ torch.tensor(sizes, dtype=torch.float64, device=x.device)
        if self.world.size == 1:
            return total.item() / max(1, sum(sizes))  # Poisson batches need not add up to len(y)
        counts = torch.stack([total, torch.tensor(float(sum(sizes)), dtype=torch.float64, device=x.device)])
        loss_sum, rows = distributed.sum_(counts, self.world).tolist()
        return loss_sum / rows

    def sync(self) -> None:
        """Rank 0's BatchNorm statistics everywhere, so every process scores and saves one model."""
        distributed.broadcast_buffers(self.model, self.world)

    def snapshot(self) -> dict[str, Any]:
        """Plain data only (tensors, numbers, strings, lists, dicts): loads with weights_only=True.
        Every process must call it (the processes' random states are gathered)."""
        own = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            own["cuda"] = torch.cuda.get_rng_state(self.device)
        ranks = distributed.gather_objects(own, self.world)
        rng = {"data": self.generator.get_state(), **{k: [r[k] for r in ranks] for k in own}}
        # References into the live state: `_frozen_copy` makes the one copy the writer needs.
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng,
            "privacy": self.private.state() if self.private is not None else [],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.private is not None:
            self.private.load(state["privacy"])
        rank, rng = self.world.rank, state["rng"]
        torch.set_rng_state(rng["torch"][rank])
        self.generator.set_state(rng["data"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"][rank], self.device)


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
    learner = _Learner(config, train, params, data, world)
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
            learner, state = _Learner(config, train, params, data, world), None
    if state is None:
        state = {"epoch": 0, "done": False, "best": None, "best_epoch": -1, "bad_epochs": 0, "history": []}
        state["best_state"], state["best_metrics"] = _cpu(learner.model.state_dict()), {}
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
        _deterministic(device),
        _progress_bar(params.epochs, resumed_from, progress if world.main else False) as bar,
        _CheckpointWriter(path if world.main else None) as writer,
    ):
        while not state["done"]:
            epoch = state["epoch"]
            row = {"train_loss": learner.train_epoch(x_train, y_train)}
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
                state["best_state"] = _cpu(learner.model.state_dict())
            else:
                state["bad_epochs"] += 1
            stop = state["bad_epochs"] >= params.early_stopping.patience
            state |= {"epoch": epoch + 1, "history": history, "done": stop or epoch + 1 >= params.epochs}
            # By time, not epochs: tiny epochs are not slowed by writes, long ones are all kept. When
            # they are written changes nothing else, since a resume is exact from any epoch.
            due = state["done"] or time.monotonic() - last_write >= params.checkpoint_interval_s
            if distributed.agree(due, world, device):  # rank 0's clock decides for every process
                last_write = time.monotonic()
                snapshot = _frozen_copy(learner.snapshot())  # on every process: it gathers random states
                if world.main:
                    # best_state is replaced, never changed in place, and history rows are final.
                    checkpoint_state = {**state, "history": list(history), **snapshot}
                    writer.submit(checkpoint_state | {"format": CHECKPOINT_FORMAT, "fingerprint": key})
            if world.main:
                _report(bar, epoch + 1, params.epochs, row, stop)
            if on_epoch is not None:
                on_epoch(epoch, row)

    best = build_model(config)
    best.load_state_dict(state["best_state"])
    spent = learner.private.summary() if learner.private is not None else None
    return FitResult(best.eval(), dict(state["best_metrics"]), state["best_epoch"], history, resumed_from, spent)


class _NoBar:
    """Stands in for a tqdm bar when progress goes to the log instead."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass


def _progress_bar(epochs: int, done: int, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=epochs, initial=done, unit="epoch", desc="train", leave=False)


def _report(bar, epoch: int, epochs: int, row: dict[str, float], stopped: bool) -> None:
    if isinstance(bar, _NoBar):
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

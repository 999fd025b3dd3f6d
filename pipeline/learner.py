"""A model with everything that changes while it learns (optimizer, schedule, loss scaler, DP-SGD,
the random generators), one epoch at a time, on one process or under DDP."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from pipeline import distributed, privacy
from pipeline.augment import move_images, random_moves
from pipeline.compute import autocast_dtype, select_device
from pipeline.distributed import ALONE, World
from pipeline.models import ModelConfig, build_model, set_input_scale
from pipeline.optimizers import make_optimizer, make_scheduler
from pipeline.params import DataParams, TrainParams
from pipeline.rows import Rows
from pipeline.scaling import input_scale


class Learner:
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
        # References into the live state: `frozen_copy` makes the one copy the writer needs.
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

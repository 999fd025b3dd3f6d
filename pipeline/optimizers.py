"""Optimizers and the learning-rate schedule of `train.optimizer` / `train.schedule`."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from pipeline.params import TrainParams


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

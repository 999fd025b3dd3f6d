"""Differentially private training (DP-SGD through Opacus), switched on by `train.privacy`.

DP-SGD bounds what the weights can reveal about any one training row: every row's gradient is
clipped to `max_grad_norm`, Gaussian noise of `noise_multiplier x max_grad_norm` is added to the
sum, and batches are Poisson samples (each row joins each step with probability `sample_rate`).
Opacus computes the per-row gradients (`GradSampleModule`), clips and adds the noise
(`DPOptimizer`) and counts the privacy spent (the RDP accountant).

- The noise is chosen before training so that `train.epochs` epochs spend `target_epsilon` at
  `delta`; early stopping only spends less. The epsilon reported is what the accountant counted
  over every epoch run (not only up to the kept one: choosing the kept epoch looked at all of them).
- The batches are drawn from the training loop's own seeded generator and the noise from torch's
  global generator, whose states the checkpoint already carries; the accountant's state is its
  history, a list of [noise multiplier, sample rate, steps], which travels in the checkpoint as
  plain data. So a resumed run draws, adds and counts exactly what an uninterrupted one does.
- Layers that mix the rows of a batch have no per-row gradient. The cnn's batch norm becomes group
  norm (`private_config`); any other layer Opacus cannot handle stops the stage, named.
- Opacus is imported only when privacy is on, so the default run does not pay for it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from pipeline.errors import StageError
from pipeline.models import ModelConfig
from pipeline.params import PrivacyParams

log = logging.getLogger(__name__)

ACCOUNTANT = "rdp"  # Renyi DP: Opacus' classic accountant; fast enough to search the noise in milliseconds
DEFAULT_DELTA_SHARE = 0.1  # delta = this / training rows when train.privacy.delta is null


def private_config(config: ModelConfig, privacy: PrivacyParams) -> ModelConfig:
    """The model config to train: with privacy on, batch norm (where the family has it) becomes
    group norm, which normalises each row on its own. The model file stores the result, so export
    rebuilds the same layers."""
    if not privacy.enabled or getattr(config, "norm", None) != "batch":
        return config
    log.info(
        "train.privacy: the %s's batch norm layers become group norm (DP-SGD needs per-row gradients)", config.arch
    )
    return dataclasses.replace(config, norm="group")  # type: ignore[call-arg]  # only families with a norm field


def delta_for(privacy: PrivacyParams, rows: int) -> float:
    """train.privacy.delta, or 0.1 / rows when it is null; refused unless below 1 / rows (a larger
    delta allows a mechanism that publishes a whole row now and then)."""
    delta = privacy.delta if privacy.delta is not None else DEFAULT_DELTA_SHARE / rows
    if delta >= 1.0 / rows:
        raise StageError(
            f"train.privacy.delta {delta:g} is not below 1 / {rows} training rows ({1.0 / rows:.3g}): such a "
            "guarantee allows leaking whole rows. Set it lower, or null for 0.1 / rows"
        )
    return delta


def check_model(model: nn.Module) -> None:
    """Stop with the layers Opacus cannot compute per-row gradients for, and what to use."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        found = "; ".join(str(error) for error in errors)
        raise StageError(
            f"train.privacy: DP-SGD cannot train this {type(model).__name__}: {found}. Use train.model.arch cnn "
            "(its batch norm becomes group norm), mlp or transformer, or switch train.privacy off"
        )


@functools.lru_cache(maxsize=16)
def noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise for which `steps` steps spend `target_epsilon` (Opacus' search, to 0.01). Kept
    for the process: the search takes seconds, and a resumed fit or the next fold asks again."""
    from opacus.accountants.utils import get_noise_multiplier

    return get_noise_multiplier(
        target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps, accountant=ACCOUNTANT
    )


def _alphas() -> list[float]:
    from opacus.accountants import RDPAccountant

    return RDPAccountant.DEFAULT_ALPHAS


@functools.lru_cache(maxsize=16)
def _rdp_per_step(sigma: float, sample_rate: float) -> Any:
    from opacus.accountants.analysis import rdp as analysis

    return analysis.compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=1, orders=_alphas())


class PrivateSteps:
    """What turns the training loop's steps into DP-SGD steps: the per-row-gradient model, the
    clipping and noising optimizer, Poisson batches and the accountant."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        privacy: PrivacyParams,
        rows: int,
        batch_size: int,
        epochs: int,
    ) -> None:
        from opacus import GradSampleModule
        from opacus.accountants import create_accountant
        from opacus.optimizers import DPOptimizer

        check_model(model)
        for layer in model.modules():
            if getattr(layer, "inplace", False):
                # The per-row-gradient hooks hand on views that an in-place ReLU may not overwrite;
                # a flag, not a weight: the model file and export are unchanged.
                setattr(layer, "inplace", False)  # noqa: B010  # a plain attribute, not a submodule
        self.rows = rows
        self.steps_per_epoch = math.ceil(rows / batch_size)  # as many steps as the non-private loop takes
        self.sample_rate = 1.0 / self.steps_per_epoch  # each row joins each step with this chance
        self.delta = delta_for(privacy, rows)
        self.target_epsilon = privacy.target_epsilon
        self.max_grad_norm = privacy.max_grad_norm
        try:
            self.noise_multiplier = noise_multiplier(
                privacy.target_epsilon, self.delta, self.sample_rate, self.steps_per_epoch * epochs
            )
        except ValueError as error:
            raise StageError(
                f"train.privacy.target_epsilon {privacy.target_epsilon:g} cannot be met ({error}): raise it, or "
                "train on more rows or for fewer epochs"
            ) from None
        self.net = GradSampleModule(model, loss_reduction="mean")
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=privacy.max_grad_norm,
            expected_batch_size=batch_size,  # the mean over a Poisson batch divides by its expected size
            loss_reduction="mean",
        )
        self.accountant = create_accountant(ACCOUNTANT)
        log.info(
            "DP-SGD: noise multiplier %.3f, max grad norm %g, sample rate %.4f, delta %.3g, for epsilon %g over %d epochs",
            self.noise_multiplier,
            self.max_grad_norm,
            self.sample_rate,
            self.delta,
            self.target_epsilon,
            epochs,
        )

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """One epoch of Poisson batches: row indices, each row in each batch with `sample_rate`
        (one draw per row and step, made step by step so memory stays one row count)."""
        for _ in range(self.steps_per_epoch):
            yield (torch.rand(self.rows, generator=generator) < self.sample_rate).nonzero().squeeze(1)

    def step(self, loss: torch.Tensor | None) -> None:
        """Clip, noise and apply the gradients of `loss` (None: the batch drew no rows, so there is
        nothing to apply; the step is still counted, which only overstates the epsilon)."""
        self.optimizer.zero_grad(set_to_none=True)
        if loss is not None:
            loss.backward()
            self.optimizer.step()
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def epsilon(self) -> float:
        """Epsilon spent so far at `delta`: what the RDP accountant's get_epsilon returns, from
        per-step RDP values computed once (RDP adds up over steps; Opacus would recompute it,
        ~0.3 s a call, after every epoch)."""
        from opacus.accountants.analysis import rdp as analysis

        rdp = sum(_rdp_per_step(sigma, rate) * steps for sigma, rate, steps in self.accountant.history)
        epsilon, _ = analysis.get_privacy_spent(orders=_alphas(), rdp=rdp, delta=self.delta)
        return float(epsilon)

    def state(self) -> list[list[float]]:
        """The accountant's history as plain data (the checkpoint loads with weights_only=True)."""
        return [[float(sigma), float(rate), int(steps)] for sigma, rate, steps in self.accountant.history]

    def load(self, state: list[list[float]]) -> None:
        self.accountant.history = [(float(sigma), float(rate), int(steps)) for sigma, rate, steps in state]

    def summary(self) -> dict[str, Any]:
        """What the metrics and the model card report."""
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": sum(int(steps) for _, _, steps in self.accountant.history),
            "accountant": ACCOUNTANT,
        }

"""mlp: fully connected layers over the row (tabular rows, or flattened images)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.models.base import ModelConfig, Scale, mlp_head
from pipeline.params import ModelParams


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    arch = "mlp"

    hidden: tuple[int, ...]  # hidden layer widths

    @classmethod
    def from_params(cls, model: ModelParams, **common: Any) -> MLPConfig:
        return cls(hidden=tuple(model.hidden), **common)


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.scale = Scale(config.n_features)
        self.head = mlp_head(config.n_features, config.hidden, config.n_classes, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.scale(x))

"""cnn: conv-bn-relu-maxpool blocks over the image, then a dropout + linear head.

`norm: group` puts GroupNorm where BatchNorm was: differentially private training needs it, since
batch norm mixes the rows of a batch and per-row gradients then no longer exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.models.base import ModelConfig, Scale, mlp_head
from pipeline.params import ModelParams


@dataclass(frozen=True)
class CNNConfig(ModelConfig):
    arch = "cnn"

    channels: tuple[int, ...]  # output channels of each conv block
    hidden: tuple[int, ...]  # widths of the fully connected head
    norm: str = "batch"  # batch | group (GroupNorm, for differentially private training)

    @classmethod
    def from_params(cls, model: ModelParams, **common: Any) -> CNNConfig:
        return cls(channels=tuple(model.channels), hidden=tuple(model.hidden), **common)


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 32), channels)  # groups of channels, as opacus' fix does
    raise ValueError(f"unknown cnn norm {kind!r}; use 'batch' or 'group'")


class CNN(nn.Module):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        if config.image_shape is None:
            raise ValueError("a cnn needs image rows (data.image_shape)")
        self.image_shape = tuple(config.image_shape)
        self.scale = Scale(config.n_features)
        blocks: list[nn.Module] = []
        in_ch = 1
        h, w = self.image_shape
        for out_ch in config.channels:
            blocks += [
                nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
                norm_layer(config.norm, out_ch),
                nn.ReLU(inplace=True),
            ]
            if min(h, w) >= 4:  # pool while the map is big enough to stay >= 2x2
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.head = mlp_head(in_ch * h * w, config.hidden, config.n_classes, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale(x).reshape(-1, 1, *self.image_shape)
        return self.head(self.features(x).flatten(1))

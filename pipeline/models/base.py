"""What every model family shares: the typed config and the input scaling layer.

A family's config is a frozen dataclass that extends `ModelConfig` with its own hyperparameters.
It is stored in model files and checkpoints as plain data (`to_dict`), so
`torch.load(..., weights_only=True)` reads it back, and `config_from_dict` rebuilds it strictly:
an unknown, missing or misspelt key fails at once, naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from pipeline.errors import StageError
from pipeline.params import ModelParams


@dataclass(frozen=True)
class ModelConfig:
    """The fields every family has: the input rows and the output classes."""

    arch: ClassVar[str]  # the family's name in params (`train.model.arch`) and in files

    n_features: int  # values per row, as the table stores them
    classes: tuple[int | str, ...]  # the output order of the logits
    image_shape: tuple[int, int] | None  # (height, width) of image rows; None for tabular rows
    dropout: float  # dropout before each fully connected layer, 0..1

    def __post_init__(self) -> None:
        # Lists (from YAML or a file) become tuples, so the config stays immutable and hashable.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))

    @classmethod
    def from_params(cls, model: ModelParams, **common: Any) -> ModelConfig:
        """The family's config from `train.model`; `common` holds the base fields."""
        raise NotImplementedError

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, float, bool, None, lists): what model files and checkpoints hold."""
        plain = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {"arch": self.arch, **{k: list(v) if isinstance(v, tuple) else v for k, v in plain.items()}}


def config_from_dict(data: Any, families: dict[str, type[ModelConfig]]) -> ModelConfig:
    """The config a file stores, checked key by key against its family's dataclass."""
    if not isinstance(data, dict):
        raise StageError(f"model config: expected a mapping, got {type(data).__name__}")
    arch = data.get("arch")
    if arch not in families:
        raise StageError(f"model config: unknown arch {arch!r}; known families: {', '.join(families)}")
    cls = families[arch]
    names = {field.name for field in dataclasses.fields(cls)}
    required = {field.name for field in dataclasses.fields(cls) if field.default is dataclasses.MISSING}
    given = set(data) - {"arch"}
    unknown, missing = sorted(given - names), sorted(required - given)
    if unknown or missing:
        raise StageError(
            f"model config for {arch!r}: unknown key(s) {unknown}, missing key(s) {missing}; "
            "the file was written by other code: retrain"
        )
    return cls(**{k: v for k, v in data.items() if k != "arch"})


class Scale(nn.Module):
    """(x - offset) * factor, per feature; the numbers come from the training rows."""

    offset: torch.Tensor
    factor: torch.Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(n_features))
        self.register_buffer("factor", torch.ones(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.offset) * self.factor


def mlp_head(n_in: int, hidden: tuple[int, ...], n_out: int, dropout: float) -> nn.Sequential:
    """dropout-linear-relu layers, then dropout + linear to the logits."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(n_in, width), nn.ReLU(inplace=True)]
        n_in = width
    layers += [nn.Dropout(dropout), nn.Linear(n_in, n_out)]
    return nn.Sequential(*layers)


def set_input_scale(model: nn.Module, offset: torch.Tensor, factor: torch.Tensor) -> None:
    """Store the training rows' scaling in a model of any family (its `scale` layer)."""
    scale = model.get_submodule("scale")
    assert isinstance(scale, Scale), f"{type(model).__name__} has no input Scale layer"
    scale.offset.copy_(offset)
    scale.factor.copy_(factor)

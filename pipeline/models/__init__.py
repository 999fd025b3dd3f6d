"""Model families and the model file format.

Every model takes flat feature rows `[batch, n_features]` with raw values (as they appear in the
table) and returns logits `[batch, n_classes]`. Input scaling is part of the model (buffers in
its state dict), so exported ONNX/TorchScript files and Triton clients send raw rows too.

The family is chosen by `train.model.arch`; each lives in its own module with its typed config:
`cnn`, `mlp`, `rnn` (LSTM/GRU), `transformer` (ViT-style patches, or one token per feature).

A model file is `torch.save` of plain data only: `{"format", "config", "state_dict", ...}`. It is
read with `torch.load(..., weights_only=True)`, which refuses anything that would run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import StageError
from pipeline.models.base import ModelConfig, config_from_dict, set_input_scale
from pipeline.models.cnn import CNN, CNNConfig
from pipeline.models.mlp import MLP, MLPConfig
from pipeline.models.rnn import RNN, RNNConfig
from pipeline.models.transformer import Transformer, TransformerConfig
from pipeline.params import DataParams, ModelParams

__all__ = [
    "FAMILIES",
    "FORMAT",
    "CNNConfig",
    "MLPConfig",
    "ModelConfig",
    "RNNConfig",
    "TransformerConfig",
    "build_model",
    "config_for",
    "config_from_dict",
    "load_model",
    "save_model",
    "set_input_scale",
]

FORMAT = "triton-retrain/model@2"  # @2: the config is a family's typed config (`ModelConfig.to_dict`)

# The registry: a family's config type -> the module it builds.
_MODULES: dict[type[ModelConfig], type[nn.Module]] = {
    CNNConfig: CNN,
    MLPConfig: MLP,
    RNNConfig: RNN,
    TransformerConfig: Transformer,
}
FAMILIES: dict[str, type[ModelConfig]] = {config.arch: config for config in _MODULES}


def config_for(model: ModelParams, data: DataParams, n_features: int) -> ModelConfig:
    """The typed architecture config of `train.model` for rows of `n_features` values."""
    image_shape = (data.image_shape[0], data.image_shape[1]) if data.image_shape is not None else None
    common = {"n_features": n_features, "classes": tuple(data.classes), "image_shape": image_shape}
    return FAMILIES[model.arch].from_params(model, dropout=model.dropout, **common)


def build_model(config: ModelConfig) -> nn.Module:
    """A fresh model of `config`'s family."""
    return _MODULES[type(config)](config)


def save_model(path: str | Path, model: nn.Module, config: ModelConfig, **extra: Any) -> None:
    """Atomically write the model file: config + state dict + any plain-data extras."""
    from pipeline.atomic import atomic_path

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "config": config.to_dict(), "state_dict": state, **extra}, tmp)


def read_file(path: str | Path, fmt: str, kind: str, fix: str) -> dict[str, Any]:
    """A torch file of this project as plain data (`weights_only`), checked to be of format `fmt`;
    StageError naming the `kind` of file and the `fix` otherwise."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses any pickle that would import or call something; such a file is
        # either corrupt or crafted, and is never loaded the unsafe way.
        reason = str(error).splitlines()[0]
        raise StageError(f"{path}: refused, loading it would need to run code ({reason})") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise StageError(f"{path}: not a {kind} of this project (format {fmt!r} expected); {fix}")
    return blob


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its file, in eval mode. Returns (model, the file's dict, with its
    "config" as the typed `ModelConfig`)."""
    blob = read_file(path, FORMAT, "model file", "retrain")
    config = config_from_dict(blob["config"], FAMILIES)
    model = build_model(config)
    model.load_state_dict(blob["state_dict"])
    return model.eval(), {**blob, "config": config}

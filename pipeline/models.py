"""Model architectures and the model file format.

Every model takes flat feature rows `[batch, n_features]` with raw values (as they appear in the
table) and returns logits `[batch, n_classes]`. Input scaling is part of the model (buffers in
its state dict), so exported ONNX/TorchScript files and Triton clients send raw rows too.

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

FORMAT = "triton-retrain/model@1"


class Scale(nn.Module):
    """(x - offset) * factor, per feature; the numbers come from the training rows."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(n_features))
        self.register_buffer("factor", torch.ones(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.offset) * self.factor


class CNN(nn.Module):
    """conv-bn-relu-maxpool blocks over the image, then a dropout + linear head."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.image_shape = tuple(config["image_shape"])
        self.scale = Scale(config["n_features"])
        blocks: list[nn.Module] = []
        in_ch = 1
        h, w = self.image_shape
        for out_ch in config["channels"]:
            blocks += [
                nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            if min(h, w) >= 4:  # pool while the map is big enough to stay >= 2x2
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.head = _mlp_head(in_ch * h * w, config["hidden"], config["n_classes"], config["dropout"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale(x).reshape(-1, 1, *self.image_shape)
        return self.head(self.features(x).flatten(1))


class MLP(nn.Module):
    """Fully connected layers for tabular rows (or flattened images)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.scale = Scale(config["n_features"])
        self.head = _mlp_head(config["n_features"], config["hidden"], config["n_classes"], config["dropout"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.scale(x))


def _mlp_head(n_in: int, hidden: list[int], n_out: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(n_in, width), nn.ReLU(inplace=True)]
        n_in = width
    layers += [nn.Dropout(dropout), nn.Linear(n_in, n_out)]
    return nn.Sequential(*layers)


def build_model(config: dict[str, Any]) -> nn.Module:
    """A fresh model from an architecture config (see `model_config`)."""
    return {"cnn": CNN, "mlp": MLP}[config["arch"]](config)


def model_config(
    arch: str,
    n_features: int,
    classes: list,
    image_shape: list[int] | None,
    channels: list[int],
    hidden: list[int],
    dropout: float,
) -> dict[str, Any]:
    """Everything needed to rebuild the model, as plain data (it is stored in the model file)."""
    return {
        "arch": arch,
        "n_features": n_features,
        "n_classes": len(classes),
        "classes": list(classes),
        "image_shape": list(image_shape) if image_shape else None,
        "channels": list(channels),
        "hidden": list(hidden),
        "dropout": float(dropout),
    }


def save_model(path: str | Path, model: nn.Module, config: dict[str, Any], **extra: Any) -> None:
    """Atomically write the model file: config + state dict + any plain-data extras."""
    from pipeline.atomic import atomic_path

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "config": config, "state_dict": state, **extra}, tmp)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its file, in eval mode. Returns (model, the whole file's dict)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses any pickle that would import or call something; such a file is
        # either corrupt or crafted, and is never loaded the unsafe way.
        reason = str(error).splitlines()[0]
        raise StageError(f"{path}: refused, loading it would need to run code ({reason})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise StageError(f"{path}: not a model file of this project (format {FORMAT!r} expected)")
    model = build_model(blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model.eval(), blob

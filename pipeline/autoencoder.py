"""An autoencoder over feature rows, and its reconstruction error as a novelty score.

The model takes raw rows (scaling fitted on the training rows is part of it, as in the classifier
families) and returns one number per row: the mean over features of the squared (`mse`) or
absolute (`l1`) difference between the scaled row and its reconstruction. Rows like the training
data come back with a small error; rows unlike anything it learnt, with a large one.

Two shapes, from `novelty.arch`:
- `dense`: fully connected layers down to `bottleneck` values and back up (any rows);
- `conv`: stride-2 3x3 convolutions over the image (`data.image_shape`), a linear bottleneck, and
  transposed convolutions back to the image's exact size.

The file is `torch.save` of plain data (format, enabled, config, state dict, threshold, metrics),
read with `torch.load(..., weights_only=True)`. A disabled stage writes a small JSON document of
the same format instead (pipeline/novelty_format.py), so export can depend on the file in both cases.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import StageError
from pipeline.models.base import Scale
from pipeline.novelty_format import DISABLED, FORMAT, is_disabled
from pipeline.params import DataParams, NoveltyParams

__all__ = ["DISABLED", "FORMAT", "Autoencoder", "AutoencoderConfig", "errors", "fit", "load", "save"]
OUTPUT_NAME = "novelty"  # the served model's second output: [batch, 1] reconstruction error


@dataclass(frozen=True)
class AutoencoderConfig:
    """What the weights need to be rebuilt; stored in the file as plain data."""

    arch = "autoencoder"  # the key config_from_dict checks (one family here)

    n_features: int
    image_shape: tuple[int, int] | None
    kind: str  # dense | conv
    hidden: tuple[int, ...]
    channels: tuple[int, ...]
    bottleneck: int
    loss: str  # mse | l1

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        if self.kind == "conv" and self.image_shape is None:
            raise StageError("novelty.arch 'conv' needs data.image_shape; use 'dense' for tabular rows")
        if self.image_shape is not None and self.image_shape[0] * self.image_shape[1] != self.n_features:
            raise StageError(f"data.image_shape {list(self.image_shape)} does not hold {self.n_features} features")

    @classmethod
    def of(cls, novelty: NoveltyParams, data: DataParams, n_features: int) -> AutoencoderConfig:
        shape = (data.image_shape[0], data.image_shape[1]) if data.image_shape is not None else None
        return cls(
            n_features,
            shape,
            novelty.arch,
            tuple(novelty.hidden),
            tuple(novelty.channels),
            novelty.bottleneck,
            novelty.loss,
        )

    def to_dict(self) -> dict[str, Any]:
        plain = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {"arch": self.arch, **{k: list(v) if isinstance(v, tuple) else v for k, v in plain.items()}}


def _dense(n_in: int, widths: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    return layers


class Autoencoder(nn.Module):
    """Raw rows in, reconstruction error per row out (`[batch, 1]`, in the scaled space)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        n = config.n_features
        self.scale = Scale(n)
        if config.kind == "dense":
            self.encoder = nn.Sequential(
                *_dense(n, list(config.hidden)), nn.Linear(_last(n, config.hidden), config.bottleneck)
            )
            widths = list(reversed(config.hidden))
            self.decoder = nn.Sequential(
                nn.ReLU(), *_dense(config.bottleneck, widths), nn.Linear(_last(config.bottleneck, widths), n)
            )
        else:
            self.encoder, self.decoder = _conv_coder(config)

    def reconstruct(self, scaled: torch.Tensor) -> torch.Tensor:
        """The reconstruction of already scaled rows, flat `[batch, n_features]`."""
        if self.config.kind == "dense":
            return self.decoder(self.encoder(scaled))
        h, w = self.config.image_shape  # type: ignore[misc]
        image = scaled.reshape(-1, 1, h, w)
        return self.decoder(self.encoder(image)).reshape(-1, self.config.n_features)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        scaled = self.scale(rows)
        diff = self.reconstruct(scaled) - scaled
        per_feature = diff * diff if self.config.loss == "mse" else diff.abs()
        return per_feature.mean(dim=1, keepdim=True)


def _last(n_in: int, widths: tuple[int, ...] | list[int]) -> int:
    return widths[-1] if len(widths) else n_in


def _conv_coder(config: AutoencoderConfig) -> tuple[nn.Sequential, nn.Sequential]:
    """Stride-2 convolutions down, a linear bottleneck, transposed convolutions back up to the
    exact image size (each layer's output_padding undoes the rounding of an odd side)."""
    h, w = config.image_shape  # type: ignore[misc]
    sizes = [(h, w)]
    encoder: list[nn.Module] = []
    c_in = 1
    for c in config.channels:
        encoder += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU()]
        c_in = c
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    flat = c_in * sizes[-1][0] * sizes[-1][1]
    encoder += [nn.Flatten(), nn.Linear(flat, config.bottleneck)]
    decoder: list[nn.Module] = [
        nn.ReLU(),
        nn.Linear(config.bottleneck, flat),
        nn.ReLU(),
        nn.Unflatten(1, (c_in, *sizes[-1])),
    ]
    outs = list(reversed([1, *config.channels[:-1]]))
    for i, c_out in enumerate(outs):
        target = sizes[len(sizes) - 2 - i]
        padding = (1 - target[0] % 2, 1 - target[1] % 2)
        decoder.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=padding))
        if i < len(outs) - 1:
            decoder.append(nn.ReLU())
        c_in = c_out
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


@dataclass(frozen=True)
class Fitted:
    model: Autoencoder
    losses: list[float]  # mean training loss per epoch


def fit(
    config: AutoencoderConfig, x: np.ndarray, novelty: NoveltyParams, offset: np.ndarray, factor: np.ndarray
) -> Fitted:
    """Train on rows `x` (raw values) with Adam for `novelty.epochs` full passes, seeded."""
    torch.manual_seed(novelty.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = Autoencoder(config)
    model.scale.offset.copy_(torch.from_numpy(offset))
    model.scale.factor.copy_(torch.from_numpy(factor))
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=novelty.lr)
    rows = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    order = torch.Generator().manual_seed(novelty.seed)
    losses = []
    for _ in range(novelty.epochs):
        total = torch.zeros((), device=device)  # summed on the device: no sync per step
        for batch in torch.randperm(len(rows), generator=order).split(novelty.batch_size):
            loss = model(rows[batch.to(device)]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
        losses.append(float(total) / len(rows))
    return Fitted(model.cpu().eval(), losses)


def errors(model: Autoencoder, x: np.ndarray, batch_rows: int = 4096) -> np.ndarray:
    """Reconstruction error of each row of `x` (raw values), float64 `[n]`."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(x), batch_rows):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_rows], dtype=np.float32))
            parts.append(model(chunk)[:, 0].double().numpy())
    return np.concatenate(parts) if parts else np.zeros(0)


def save(path: str | Path, fitted: Autoencoder, **extra: Any) -> None:
    """Atomically write the novelty file of a trained autoencoder (`extra`: threshold, metrics)."""
    from pipeline.atomic import atomic_path

    state = {k: v.detach().cpu() for k, v in fitted.state_dict().items()}
    blob = {"format": FORMAT, "enabled": True, "config": fitted.config.to_dict(), "state_dict": state, **extra}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def config_of(data: Any, path: str | Path) -> AutoencoderConfig:
    """The stored config, checked key by key: an unknown or missing key fails, naming it."""
    names = {field.name for field in dataclasses.fields(AutoencoderConfig)}
    given = set(data) - {"arch"} if isinstance(data, dict) else set()
    if not isinstance(data, dict) or data.get("arch") != AutoencoderConfig.arch or given != names:
        raise StageError(
            f"{path}: autoencoder config with unknown key(s) {sorted(given - names)}, missing key(s) "
            f"{sorted(names - given)}; the file was written by other code: rerun novelty"
        )
    return AutoencoderConfig(**{k: v for k, v in data.items() if k != "arch"})


def load(path: str | Path) -> tuple[Autoencoder | None, dict[str, Any]]:
    """(model in eval mode, the file's dict), or (None, dict) when the stage was disabled."""
    if is_disabled(path):
        return None, dict(DISABLED)
    from pipeline.models import read_file

    blob = read_file(path, FORMAT, "novelty file", "rerun novelty")
    config = config_of(blob["config"], path)
    model = Autoencoder(config)
    model.load_state_dict(blob["state_dict"])
    return model.eval(), {**blob, "config": config}

"""rnn: an LSTM or GRU reading an image row by row (one step per pixel row), or a tabular row as
a sequence of one step; the last step's output goes to a dropout + linear head.

No data-dependent shapes: the sequence length and width are fixed by the config, only the batch
axis varies, so the ONNX (LSTM/GRU operators) and traced TorchScript forms match the model.

The initial state is made from the input (`new_zeros`), not left to torch's LSTM/GRU: those create
it with `torch.zeros(..., device=input.device)`, which a trace records with the tracing device as a
constant, so the TorchScript file would put it on the CPU under CUDA inputs on a GPU server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from pipeline.models.base import ModelConfig, Scale, mlp_head
from pipeline.params import ModelParams


@dataclass(frozen=True)
class RNNConfig(ModelConfig):
    arch = "rnn"

    cell: Literal["lstm", "gru"]
    hidden_size: int  # units per recurrent layer
    layers: int  # stacked recurrent layers

    @classmethod
    def from_params(cls, model: ModelParams, **common: Any) -> RNNConfig:
        rnn = model.rnn
        return cls(cell=rnn.cell, hidden_size=rnn.hidden_size, layers=rnn.layers, **common)


class RNN(nn.Module):
    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.scale = Scale(config.n_features)
        # (steps, values per step): pixel rows of an image, or the whole tabular row at once.
        self.steps, self.width = config.image_shape or (1, config.n_features)
        recurrent = {"lstm": nn.LSTM, "gru": nn.GRU}[config.cell]
        self.rnn = recurrent(
            self.width,
            config.hidden_size,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,  # between stacked layers only
        )
        self.head = mlp_head(config.hidden_size, (), config.n_classes, config.dropout)
        self.lstm = config.cell == "lstm"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence = self.scale(x).reshape(-1, self.steps, self.width)
        h0 = sequence.new_zeros(self.rnn.num_layers, sequence.shape[0], self.rnn.hidden_size)
        outputs, _ = self.rnn(sequence, (h0, h0) if self.lstm else h0)
        return self.head(outputs[:, -1])

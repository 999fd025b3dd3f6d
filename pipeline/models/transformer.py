"""transformer: a small pre-norm encoder over tokens, classified from a learned [CLS] token.

- Image rows: a ViT-style encoder. Square patches of `patch_size` pixels become tokens through one
  strided convolution (the usual patch embedding), plus a learned position embedding.
- Tabular rows: one token per feature, `value * w_f + b_f` with a learned vector pair per feature
  (so the token also says which feature it is; no position embedding needed).

Attention is `scaled_dot_product_attention` without masks: the token count is fixed by the
config and only the batch axis varies, so the ONNX and traced TorchScript forms match the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.base import ModelConfig, Scale, mlp_head
from pipeline.params import ModelParams


@dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    arch = "transformer"

    patch_size: int  # images: side of a square patch in pixels
    dim: int  # token width
    depth: int  # encoder blocks
    heads: int  # attention heads (dim / heads values each)
    mlp_dim: int  # width of each block's feed-forward layer

    @classmethod
    def from_params(cls, model: ModelParams, **common: Any) -> TransformerConfig:
        t = model.transformer
        return cls(patch_size=t.patch_size, dim=t.dim, depth=t.depth, heads=t.heads, mlp_dim=t.mlp_dim, **common)


class Block(nn.Module):
    """Pre-norm self-attention and feed-forward, each with a residual connection."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim))
        self.drop = nn.Dropout(dropout)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        tokens, dim = x.shape[1], x.shape[2]
        # (batch, tokens, 3 * dim) -> three of (batch, heads, tokens, dim / heads)
        q, k, v = self.qkv(x).reshape(-1, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(-1, tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attention(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class PatchTokens(nn.Module):
    """Image rows -> one token per square patch, with a position embedding."""

    def __init__(self, image_shape: tuple[int, int], patch: int, dim: int) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.embed = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        count = (image_shape[0] // patch) * (image_shape[1] // patch)
        self.position = nn.Parameter(torch.randn(1, count, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(x.reshape(-1, 1, *self.image_shape))  # (batch, dim, rows, cols)
        return patches.flatten(2).transpose(1, 2) + self.position


class FeatureTokens(nn.Module):
    """Tabular rows -> one token per feature: value * weight + bias, a learned pair per feature."""

    def __init__(self, n_features: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_features, dim) * 0.02)
        self.bias = nn.Parameter(torch.zeros(n_features, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1) * self.weight + self.bias


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.scale = Scale(config.n_features)
        if config.image_shape is not None:
            self.tokens: nn.Module = PatchTokens(config.image_shape, config.patch_size, config.dim)
        else:
            self.tokens = FeatureTokens(config.n_features, config.dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.blocks = nn.Sequential(
            *(Block(config.dim, config.heads, config.mlp_dim, config.dropout) for _ in range(config.depth))
        )
        self.norm = nn.LayerNorm(config.dim)
        self.head = mlp_head(config.dim, (), config.n_classes, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(self.scale(x))
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.norm(self.blocks(tokens))[:, 0])

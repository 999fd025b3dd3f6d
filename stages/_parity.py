"""Parity: does an exported file answer as the PyTorch model did, on every test row?

export compares the ONNX and TorchScript files with the model they came from, a batch of rows at a
time (bounded memory on a large split), and stops with `ParityError` past `export.parity_tolerance`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from pipeline.errors import StageError
from pipeline.rows import Rows
from pipeline.transform import RawRows
from serving import configs

BATCH_ROWS = 4096  # test rows per forward pass in the parity checks: bounded memory on a large split


class ParityError(StageError):
    """An exported file disagrees with the PyTorch model beyond export.parity_tolerance."""


def batched(predict, rows: Rows) -> np.ndarray:
    """`predict` (float32 rows -> probabilities) over all rows, a batch at a time."""
    return np.concatenate([predict(rows.float32(i, i + BATCH_ROWS)) for i in range(0, len(rows), BATCH_ROWS)])


def _tensors(result: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def torch_outputs(module: nn.Module, rows: Rows, count: int = 1) -> list[np.ndarray]:
    """Each of the module's `count` outputs over all rows."""
    with torch.no_grad():
        return [batched(lambda x, k=k: _tensors(module(torch.from_numpy(x)))[k].numpy(), rows) for k in range(count)]


def onnx_outputs(path: Path, rows: Rows, names: list[str]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [batched(lambda x, n=n: session.run([n], {configs.INPUT_NAME: x})[0], rows) for n in names]


def torch_probabilities(module: nn.Module, rows: Rows) -> np.ndarray:
    return torch_outputs(module, rows)[0]


def onnx_probabilities(path: Path, rows: Rows | RawRows) -> np.ndarray:
    """The ONNX file's probabilities: on float32 rows, or on raw rows (a mixed table's model, whose
    graph holds the transform) fed as the served model's inputs."""
    if not isinstance(rows, RawRows):
        return onnx_outputs(path, rows, [configs.OUTPUT_NAME])[0]
    from pipeline.transform_onnx import feeds

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parts = [
        session.run([configs.OUTPUT_NAME], feeds(rows.take(np.arange(i, min(i + BATCH_ROWS, len(rows))))))[0]
        for i in range(0, len(rows), BATCH_ROWS)
    ]
    return np.concatenate(parts)


def torchscript_probabilities(path: Path, rows: Rows) -> np.ndarray:
    return torch_probabilities(torch.jit.load(str(path), map_location="cpu").eval(), rows)


def check_parity(fmt: str, expected: np.ndarray, actual: np.ndarray, tolerance: float) -> float:
    """Max abs difference of two probability tables; ParityError when above the tolerance."""
    if actual.shape != expected.shape:
        raise ParityError(f"{fmt} output has shape {actual.shape}, the PyTorch model gives {expected.shape}")
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"{fmt} export differs from the PyTorch model on the test split: max abs diff {diff:.3g} > "
            f"export.parity_tolerance {tolerance:g}. Check the exporter (export.opset) or raise the tolerance."
        )
    return diff

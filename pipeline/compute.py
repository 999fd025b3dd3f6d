"""Where and how training computes: the device and its rows, mixed precision, torch's CPU threads,
and deterministic kernels on CPU (so a CPU run is repeatable bit for bit)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import numpy as np
import torch

from pipeline.errors import StageError
from pipeline.rows import Rows


def device_tensors(rows: Rows, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(features, int64 labels) on `device`. Features keep their stored dtype (uint8 pixels: a
    quarter of float32, and no copy at all on the CPU); each batch becomes float32 where it is used."""
    x = torch.from_numpy(np.ascontiguousarray(rows.x))
    return x.to(device), torch.from_numpy(np.ascontiguousarray(rows.y, np.int64)).to(device)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU has it (no loss scaling needed), else fp16; None = full precision."""
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """torch's intra-op CPU threads for the duration of a fit (`train.cpu_threads`; 0 keeps
    torch's default of one per core), then the caller's setting again.

    One thread is the default because the models here are small: their operators are too short
    for a thread pool to pay off, and when any other process holds a core (another Airflow task,
    a second Celery worker process, the test suite) every operator waits for a thread that is not
    running. On 2 cores a crossval fold of the digits CNN took 7.9 s with one thread and 8.9 s with
    torch's default on an idle machine, 9.8 s vs 14.3 s beside one busy process, and 7-9 s vs
    35-85 s beside other jobs' benchmarks (`bench/train_threads.py`, README). torchrun sets
    OMP_NUM_THREADS=1 for the same reason."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def deterministic_kernels(device: torch.device) -> Iterator[None]:
    """Ask torch for deterministic kernels on CPU for the duration of a fit, then restore the
    caller's setting. (CUDA runs are fast rather than bit-exact; they would need a cuBLAS
    workspace setting made before CUDA starts.)"""
    import torch.utils.deterministic as torch_deterministic

    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch_deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]  # set by torch at import; not in its stubs
    if device.type == "cpu" and not before:
        _use_deterministic_algorithms(True, warn_only=True)
        # Filling every new tensor with NaN (a debugging aid) cost ~5% of a step; our kernels
        # overwrite what they allocate.
        torch_deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        _use_deterministic_algorithms(before, warn_only=warn_only)
        torch_deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]


def _use_deterministic_algorithms(mode: bool, *, warn_only: bool) -> None:
    """`torch.use_deterministic_algorithms` without its import of the compiler stack.

    torch's function sets the kernels' flag and also `torch._inductor.config.deterministic`, whose
    import loads `torch._inductor` and `torch._dynamo` (1.2-1.6 s per training process on a CPU
    host) for a setting only compiled code reads. Nothing here compiles; where inductor is already
    loaded, torch's own function runs so that its config follows."""
    if "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)

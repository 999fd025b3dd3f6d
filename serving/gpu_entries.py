"""The GPU entries of a candidate (`gpu/<name>`: native onnxruntime; `gpu/<name>_torchscript`:
native libtorch, both `KIND_GPU`), loaded as their backends would load them, on a machine without a
GPU, so that an entry a GPU server would refuse fails here first.

The local server cannot load these entries (it ships the Python backend only, and no GPU), so each
is checked by what can load it here:
- libtorch: the TorchScript file is loaded onto the `meta` device. Every weight moves with
  `map_location`, but a device the trace froze into the graph (a tensor created on the CPU while
  tracing) does not: on a GPU server that is a device mismatch with the CUDA inputs. Such a
  constant is refused, and the module runs on a full batch of `meta` inputs, bound by position as
  the backend binds `input__0, ...`; only a device error fails it (an operator without a `meta`
  kernel, e.g. `aten::equal` in attention, or a `.item()`, ends that run without a verdict: the
  graph's constants have been checked).
- onnxruntime: an onnxruntime session on the ONNX file (CPU provider: the CUDA provider is not
  installed here), whose inputs and outputs must be the config's names, types and widths, run on
  a full batch (`max_batch_size` rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from serving.configs import ConfigError, check_config

GPU_FOLDER = "gpu"
VERSION = "1"


def check_gpu_entries(candidate: Path) -> list[str]:
    """Load every entry under `candidate/gpu/`; returns the entries checked. ConfigError says which
    entry a GPU server would fail to load, and why."""
    checked = []
    for config_path in sorted((candidate / GPU_FOLDER).glob("*/config.pbtxt")):
        entry = f"{GPU_FOLDER}/{config_path.parent.name}"
        config = check_config(config_path.read_text(), source=f"{entry}/config.pbtxt")
        model = config_path.parent / VERSION / config.default_model_filename
        if config.platform == "pytorch_libtorch":
            check_libtorch(config, model, entry)
        elif config.backend == "onnxruntime":
            check_onnxruntime(config, model, entry)
        else:
            raise ConfigError(
                f"{entry}: unexpected GPU entry (platform {config.platform!r}, backend {config.backend!r})"
            )
        checked.append(entry)
    return checked


def _batch(config: ModelConfig) -> int:
    return max(1, config.max_batch_size)


def check_libtorch(config: ModelConfig, model: Path, entry: str) -> None:
    import torch

    try:
        on_cpu = torch.jit.load(str(model), map_location="cpu")
        module = torch.jit.load(str(model), map_location="meta").eval()
    except Exception as error:  # a file libtorch cannot read
        raise ConfigError(f"{entry}: {model.name} does not load as TorchScript ({error})") from None
    for tensor in config.input:
        if tensor.data_type != DataType.TYPE_FP32:
            raise ConfigError(f"{entry}: input {tensor.name} is not FP32; TorchScript entries take numbers only")
    fix = "the model must create its tensors from its inputs (e.g. `x.new_zeros(...)`), not on a fixed device"
    frozen = frozen_devices(on_cpu.inlined_graph)  # (inlining folds constants: not on meta)
    if frozen:
        raise ConfigError(
            f"{entry}: {model.name} fails on inputs of another device than the one it was traced on "
            f"(on a GPU server: CUDA): its graph holds the device(s) {sorted(set(frozen))} as constants; {fix}"
        )
    inputs = [torch.zeros((_batch(config), *tensor.dims), device="meta") for tensor in config.input]
    try:
        with torch.no_grad():
            result = module(*inputs)
    except Exception as error:
        text = str(error)
        if "device" not in text:
            return  # something the meta device cannot do (no kernel, .item()): no verdict beyond the constants
        lines = text.strip().splitlines()
        raise ConfigError(
            f"{entry}: {model.name} fails on inputs of another device than the one it was traced on "
            f"(on a GPU server: CUDA): {lines[-1] if lines else error}; {fix}"
        ) from None
    outputs = result if isinstance(result, tuple) else (result,)
    _check_outputs(config, [tuple(t.shape) for t in outputs], entry)


def frozen_devices(graph: Any) -> list[str]:
    """Every device a TorchScript graph holds as a constant, in nested blocks too."""
    found = []
    for node in graph.nodes():
        if node.kind() == "prim::Constant" and node.output().type().kind() == "DeviceObjType":
            found.append(str(node.output().toIValue()))
        for block in node.blocks():
            found += frozen_devices(block)
    return found


def check_onnxruntime(config: ModelConfig, model: Path, entry: str) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    types = {DataType.TYPE_FP32: ("tensor(float)", np.float32), DataType.TYPE_STRING: ("tensor(string)", object)}
    graph = {i.name: i for i in session.get_inputs()}
    if set(graph) != {t.name for t in config.input}:
        raise ConfigError(
            f"{entry}: config inputs {[t.name for t in config.input]} but the ONNX file takes {sorted(graph)}"
        )
    feeds = {}
    for tensor in config.input:
        onnx_type, dtype = types[tensor.data_type]
        if graph[tensor.name].type != onnx_type:
            raise ConfigError(
                f"{entry}: input {tensor.name} is {graph[tensor.name].type} in the ONNX file, {onnx_type} in the config"
            )
        shape = (_batch(config), *tensor.dims)
        feeds[tensor.name] = np.full(shape, "", dtype=object) if dtype is object else np.zeros(shape, dtype)
    names = [t.name for t in config.output]
    missing = sorted(set(names) - {o.name for o in session.get_outputs()})
    if missing:
        raise ConfigError(f"{entry}: outputs {missing} of the config are not outputs of the ONNX file")
    _check_outputs(config, [np.asarray(o).shape for o in session.run(names, feeds)], entry)


def _check_outputs(config: ModelConfig, shapes: list[tuple[int, ...]], entry: str) -> None:
    wanted = [(_batch(config), *t.dims) for t in config.output]
    if [tuple(s) for s in shapes] != [tuple(w) for w in wanted]:
        raise ConfigError(f"{entry}: outputs of shapes {shapes} for a full batch, the config declares {wanted}")

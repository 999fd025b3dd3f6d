"""Triton `config.pbtxt` for an exported model: rendered from `params.yaml`, checked by parsing.

Three variants of the same model, with the same dims, batching and I/O semantics:
- `python_backend_config`: what the local CPU server runs (it ships only Triton's Python backend):
  `serving/backend/model.py` runs the ONNX file with onnxruntime.
- `onnx_gpu_config`: the native `onnxruntime` backend on GPUs (an NGC Triton image).
- `libtorch_gpu_config`: the native `pytorch_libtorch` backend on GPUs, running the TorchScript file.

The renderers are pure functions returning text. `check_config` parses a text with tritonclient's
own `ModelConfig` protobuf, so a typo fails here instead of at load time on a server.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from pipeline.params import ExportParams

# The tensor names of the ONNX file and the Python-backend entry (golden.json uses these).
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
# The libtorch backend binds tensors by position through the `<name>__<index>` convention; a
# TorchScript module has no output names of its own, so this is the portable form.
LIBTORCH_INPUT_NAME = "input__0"
LIBTORCH_OUTPUT_NAME = "output__0"

ONNX_FILENAME = "model.onnx"
TORCHSCRIPT_FILENAME = "model.pt"


@dataclass(frozen=True)
class Signature:
    """One FP32 input row of `n_features` values in, one FP32 row of `n_classes` probabilities out."""

    n_features: int
    n_classes: int
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME


def _tensor(name: str, width: int) -> str:
    # dims leave out the batch axis: with max_batch_size > 0 Triton adds it in front.
    return f'  {{\n    name: "{name}"\n    data_type: TYPE_FP32\n    dims: [ {width} ]\n  }}'


def _batching(params: ExportParams) -> str:
    if not params.dynamic_batching:
        return ""
    lines = ["dynamic_batching {"]
    if params.preferred_batch_sizes:
        sizes = ", ".join(str(size) for size in params.preferred_batch_sizes)
        lines.append(f"  preferred_batch_size: [ {sizes} ]")
    lines.append(f"  max_queue_delay_microseconds: {params.max_queue_delay_microseconds}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render(params: ExportParams, signature: Signature, engine: str, kind: str, count: int, extra: str = "") -> str:
    return (
        f'name: "{params.model_name}"\n'
        f"{engine}\n"
        f"max_batch_size: {params.max_batch_size}\n"
        f"{extra}"
        f"input [\n{_tensor(signature.input_name, signature.n_features)}\n]\n"
        f"output [\n{_tensor(signature.output_name, signature.n_classes)}\n]\n"
        f"{_batching(params)}"
        f"instance_group [\n  {{\n    kind: {kind}\n    count: {count}\n  }}\n]\n"
    )


def python_backend_config(params: ExportParams, signature: Signature) -> str:
    """The entry the local CPU server loads: model.py + model.onnx in the version folder."""
    return _render(params, signature, 'backend: "python"', "KIND_CPU", params.instance_count)


def onnx_gpu_config(params: ExportParams, signature: Signature) -> str:
    """A GPU production server's entry for the same ONNX file (native onnxruntime backend)."""
    return _render(
        params,
        signature,
        'backend: "onnxruntime"',
        "KIND_GPU",
        params.gpu_instance_count,
        extra=f'default_model_filename: "{ONNX_FILENAME}"\n',
    )


def libtorch_gpu_config(params: ExportParams, signature: Signature, name_suffix: str = "_torchscript") -> str:
    """A GPU production server's entry for the TorchScript file (native libtorch backend)."""
    renamed = params.model_copy(update={"model_name": params.model_name + name_suffix})
    libtorch = Signature(signature.n_features, signature.n_classes, LIBTORCH_INPUT_NAME, LIBTORCH_OUTPUT_NAME)
    return _render(
        renamed,
        libtorch,
        'platform: "pytorch_libtorch"',
        "KIND_GPU",
        params.gpu_instance_count,
        extra=f'default_model_filename: "{TORCHSCRIPT_FILENAME}"\n',
    )


def check_config(text: str, source: str = "config.pbtxt") -> ModelConfig:
    """Parse a config with Triton's ModelConfig protobuf; ValueError says what is wrong.

    Beyond the syntax, a config must name its model, say what runs it (platform or backend) and
    declare at least one input and output: all three parse fine when missing, then fail to load.
    """
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ValueError(f"{source}: not a valid Triton model config: {error}") from None
    missing = [
        what
        for what, ok in (
            ("name", bool(config.name)),
            ("platform or backend", bool(config.platform or config.backend)),
            ("an input", len(config.input) > 0),
            ("an output", len(config.output) > 0),
        )
        if not ok
    ]
    if missing:
        raise ValueError(f"{source}: Triton model config lacks {', '.join(missing)}")
    return config

"""Triton `config.pbtxt` for an exported model: built from `params.yaml`, checked by parsing.

Three variants of the same model, with the same dims, batching and I/O semantics:
- `python_backend_config`: what the local CPU server runs (it ships only Triton's Python backend):
  `serving/backend/model.py` runs the ONNX file with onnxruntime, with the thread settings the
  config's `parameters` carry.
- `onnx_gpu_config`: the native `onnxruntime` backend on GPUs (an NGC Triton image).
- `libtorch_gpu_config`: the native `pytorch_libtorch` backend on GPUs, running the TorchScript file.

Each is a `ModelConfig` protobuf message (tritonclient's own copy of Triton's schema), printed with
`text_format` as the repository code reads it back, so a field name or a value of the wrong type
fails here. `check_config` parses a text with the same message type.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelInstanceGroup

from pipeline.candidate import ENTRY_ONNX_FILE, ENTRY_TORCHSCRIPT_FILE
from pipeline.errors import StageError
from pipeline.params import ExportParams

# The tensor names of the ONNX file and the Python-backend entry (golden.json uses these).
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
# The libtorch backend binds tensors by position through the `<name>__<index>` convention; a
# TorchScript module has no output names of its own, so this is the portable form.
LIBTORCH_INPUT_NAME = "input__0"
LIBTORCH_OUTPUT_NAME = "output__0"


# Model config parameters serving/backend/model.py reads. The thread count has the name the native
# onnxruntime backend gives it; the spinning switch is onnxruntime's own session config key.
INTRA_OP_THREADS = "intra_op_thread_count"
ALLOW_SPINNING = "session.intra_op.allow_spinning"


# Triton's wire datatypes of the inputs a model may take, and their config types.
DATATYPES = {"FP32": DataType.TYPE_FP32, "BYTES": DataType.TYPE_STRING}


@dataclass(frozen=True)
class Input:
    """One input tensor `[batch, width]`: FP32 numbers or BYTES (strings)."""

    name: str
    width: int
    datatype: str = "FP32"


@dataclass(frozen=True)
class Signature:
    """One FP32 input row of `n_features` values in, one FP32 row of `n_classes` probabilities out;
    or, with `inputs`, several typed inputs (a mixed table's raw columns: FP32 numbers, BYTES
    categories); and optionally more FP32 outputs after the probabilities (`more_outputs`: (name,
    values per row) each, e.g. the novelty score), in the order the model returns them."""

    n_features: int
    n_classes: int
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    more_outputs: tuple[tuple[str, int], ...] = ()
    inputs: tuple[Input, ...] = ()

    @property
    def outputs(self) -> list[tuple[str, int]]:
        """Every output as (name, values per row), the probabilities first."""
        return [(self.output_name, self.n_classes), *self.more_outputs]

    def tensors(self) -> tuple[Input, ...]:
        return self.inputs or (Input(self.input_name, self.n_features),)


def build_config(
    params: ExportParams,
    signature: Signature,
    *,
    kind: ModelInstanceGroup.Kind.ValueType,
    count: int,
    backend: str = "",
    platform: str = "",
    default_model_filename: str = "",
    parameters: dict[str, str] | None = None,
) -> ModelConfig:
    """The model config message of one variant."""
    config = ModelConfig(
        name=params.model_name,
        backend=backend,
        platform=platform,
        max_batch_size=params.max_batch_size,
        default_model_filename=default_model_filename,
    )
    # dims leave out the batch axis: with max_batch_size > 0 Triton adds it in front.
    for tensor in signature.tensors():
        config.input.add(name=tensor.name, data_type=DATATYPES[tensor.datatype], dims=[tensor.width])
    for name, width in signature.outputs:
        config.output.add(name=name, data_type=DataType.TYPE_FP32, dims=[width])
    if params.dynamic_batching:
        config.dynamic_batching.SetInParent()  # present even when every field keeps its default
        config.dynamic_batching.preferred_batch_size.extend(params.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = params.max_queue_delay_microseconds
    config.instance_group.add(kind=kind, count=count)
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return config


def render(config: ModelConfig) -> str:
    return text_format.MessageToString(config)


def backend_parameters(params: ExportParams) -> dict[str, str]:
    """What serving/backend/model.py reads from the config: onnxruntime's threads per instance."""
    return {
        INTRA_OP_THREADS: str(params.intra_op_threads),
        ALLOW_SPINNING: "1" if params.intra_op_spinning else "0",
    }


def python_backend_config(params: ExportParams, signature: Signature) -> str:
    """The entry the local CPU server loads: model.py + model.onnx in the version folder."""
    config = build_config(
        params,
        signature,
        backend="python",
        kind=ModelInstanceGroup.KIND_CPU,
        count=params.instance_count,
        parameters=backend_parameters(params),
    )
    return render(config)


def onnx_gpu_config(params: ExportParams, signature: Signature) -> str:
    """A GPU production server's entry for the same ONNX file (native onnxruntime backend)."""
    config = build_config(
        params,
        signature,
        backend="onnxruntime",
        kind=ModelInstanceGroup.KIND_GPU,
        count=params.gpu_instance_count,
        default_model_filename=ENTRY_ONNX_FILE,
    )
    return render(config)


def libtorch_gpu_config(params: ExportParams, signature: Signature, name_suffix: str = "_torchscript") -> str:
    """A GPU production server's entry for the TorchScript file (native libtorch backend)."""
    renamed = params.model_copy(update={"model_name": params.model_name + name_suffix})
    # Outputs by position: output__0, output__1, ...
    more = tuple((f"output__{i}", width) for i, (_, width) in enumerate(signature.more_outputs, start=1))
    libtorch = Signature(signature.n_features, signature.n_classes, LIBTORCH_INPUT_NAME, LIBTORCH_OUTPUT_NAME, more)
    config = build_config(
        renamed,
        libtorch,
        platform="pytorch_libtorch",
        kind=ModelInstanceGroup.KIND_GPU,
        count=params.gpu_instance_count,
        default_model_filename=ENTRY_TORCHSCRIPT_FILE,
    )
    return render(config)


class ConfigError(StageError):
    """A model config that Triton would refuse to load; the message says what is wrong."""


def check_config(text: str, source: str = "config.pbtxt") -> ModelConfig:
    """Parse a config with Triton's ModelConfig protobuf; ConfigError says what is wrong.

    Beyond the syntax, a config must name its model, say what runs it (platform or backend) and
    declare at least one input and output: all three parse fine when missing, then fail to load.
    """
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ConfigError(f"{source}: not a valid Triton model config: {error}") from None
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
        raise ConfigError(f"{source}: Triton model config lacks {', '.join(missing)}")
    return config

"""Triton configs render from params and parse; the Python-backend model batches requests right.

The GPU configs (onnxruntime, libtorch) cannot be loaded by the local server, so parsing with
Triton's ModelConfig protobuf is their check. The Python-backend `model.py` is exercised here with
a stand-in for `triton_python_backend_utils`; the serving tests load it in a real server.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as pb

from serving import configs

SIGNATURE = configs.Signature(n_features=64, n_classes=10)


def test_python_backend_config_parses(params):
    config = configs.check_config(configs.python_backend_config(params.export, SIGNATURE))
    assert config.name == params.export.model_name
    assert config.backend == "python" and not config.platform
    assert config.max_batch_size == params.export.max_batch_size
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("input", pb.TYPE_FP32, [64])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("probabilities", [10])]
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (pb.ModelInstanceGroup.KIND_CPU, params.export.instance_count)
    ]
    assert config.HasField("dynamic_batching") == params.export.dynamic_batching


def test_onnxruntime_gpu_config_parses(params):
    config = configs.check_config(configs.onnx_gpu_config(params.export, SIGNATURE))
    assert (config.name, config.backend, config.default_model_filename) == (
        params.export.model_name,
        "onnxruntime",
        "model.onnx",
    )
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (pb.ModelInstanceGroup.KIND_GPU, params.export.gpu_instance_count)
    ]
    assert [t.name for t in config.input] == ["input"] and [t.name for t in config.output] == ["probabilities"]


def test_libtorch_gpu_config_parses(params):
    config = configs.check_config(configs.libtorch_gpu_config(params.export, SIGNATURE))
    assert config.name == f"{params.export.model_name}_torchscript"
    assert (config.platform, config.default_model_filename) == ("pytorch_libtorch", "model.pt")
    assert [(t.name, list(t.dims)) for t in config.input] == [("input__0", [64])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("output__0", [10])]
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU


def test_batching_settings_come_from_params(params):
    tuned = params.export.model_copy(
        update={"preferred_batch_sizes": [8, 32], "max_queue_delay_microseconds": 500, "max_batch_size": 32}
    )
    config = configs.check_config(configs.python_backend_config(tuned, SIGNATURE))
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.max_batch_size == 32
    off = params.export.model_copy(update={"dynamic_batching": False})
    for render in (configs.python_backend_config, configs.onnx_gpu_config, configs.libtorch_gpu_config):
        assert not configs.check_config(render(off, SIGNATURE)).HasField("dynamic_batching")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name: "m"\nbackend: "python"\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] }', "not a valid"),
        ('name: "m"\nbackend: "python"\nmax_batch_size: "many"', "not a valid"),
        ('name: "m"\nbackend: "python"\nbatch_size_max: 4', "not a valid"),  # unknown field
        ('name: "m"\ninput [ { name: "x" dims: [ 4 ] } ]\noutput [ { name: "y" dims: [ 2 ] } ]', "platform or backend"),
        ('backend: "python"\ninput [ { name: "x" dims: [ 4 ] } ]\noutput [ { name: "y" dims: [ 2 ] } ]', "lacks name"),
        ('name: "m"\nbackend: "python"\ninput [ { name: "x" dims: [ 4 ] } ]', "an output"),
    ],
)
def test_broken_config_is_rejected(text, message):
    with pytest.raises(ValueError, match=message):
        configs.check_config(text, source="m/config.pbtxt")


# --- the Python-backend model, with a stand-in for Triton's utilities -----------------------------


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _Response:
    def __init__(self, output_tensors, error=None) -> None:
        self.output_tensors, self.error = output_tensors, error


def _fake_pb_utils() -> types.ModuleType:
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = _Tensor
    fake.InferenceResponse = _Response
    fake.TritonError = str
    fake.TritonModelException = type("TritonModelException", (Exception,), {})
    fake.get_input_config_by_name = lambda config, name: next(t for t in config["input"] if t["name"] == name)
    fake.get_output_config_by_name = lambda config, name: next(t for t in config["output"] if t["name"] == name)
    fake.triton_string_to_numpy = {"TYPE_FP32": np.float32}.__getitem__
    fake.get_input_tensor_by_name = lambda request, name: request[name]
    return fake


@pytest.fixture
def backend(monkeypatch, project_root):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    spec = importlib.util.spec_from_file_location("triton_model", project_root / "serving/backend/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _repository(tmp_path: Path, params, signature: configs.Signature) -> tuple[Path, str]:
    """A model folder with version 1 holding a small softmax ONNX file; returns (folder, config JSON)."""
    from stages.export import Probabilities, export_onnx

    torch.manual_seed(0)
    model = Probabilities(torch.nn.Linear(64, 10)).eval()
    folder = tmp_path / params.export.model_name
    (folder / "1").mkdir(parents=True)
    export_onnx(model, 64, folder / "1" / "model.onnx", params.export.opset)
    config = configs.check_config(configs.python_backend_config(params.export, signature))
    # Triton hands the config to initialize() as this JSON (proto field names, dims as strings).
    return folder, json_format.MessageToJson(config, preserving_proto_field_name=True)


def test_backend_batches_requests_into_one_run(tmp_path, params, backend):
    folder, config_json = _repository(tmp_path, params, SIGNATURE)
    model = backend.TritonPythonModel()
    model.initialize({"model_config": config_json, "model_repository": str(folder), "model_version": "1"})

    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 16, (n, 64)).astype(np.float32) for n in (1, 3, 2)]
    runs = []
    session_run = model.session.run
    model.session = types.SimpleNamespace(run=lambda *a: runs.append(a) or session_run(*a))
    responses = model.execute([{"input": _Tensor("input", batch)} for batch in batches])

    assert len(runs) == 1  # one onnxruntime call for the three requests
    assert len(responses) == 3
    reference = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, response in zip(batches, responses, strict=True):
        assert response.error is None
        (tensor,) = response.output_tensors
        assert tensor.name == "probabilities" and tensor.array.dtype == np.float32
        np.testing.assert_allclose(tensor.array, reference.run(None, {"input": batch})[0], rtol=1e-6, atol=1e-7)
    model.finalize()


def test_backend_refuses_config_that_does_not_match_the_onnx_file(tmp_path, params, backend):
    renamed = configs.Signature(64, 10, input_name="pixels", output_name="probabilities")
    folder, config_json = _repository(tmp_path, params, renamed)
    with pytest.raises(Exception, match="pixels"):
        backend.TritonPythonModel().initialize(
            {"model_config": config_json, "model_repository": str(folder), "model_version": "1"}
        )


def test_backend_answers_every_request_with_the_error_when_onnxruntime_fails(tmp_path, params, backend):
    folder, config_json = _repository(tmp_path, params, SIGNATURE)
    model = backend.TritonPythonModel()
    model.initialize({"model_config": config_json, "model_repository": str(folder), "model_version": "1"})
    bad = [
        {"input": _Tensor("input", np.zeros((1, 3), np.float32))},
        {"input": _Tensor("input", np.zeros((2, 3), np.float32))},
    ]
    responses = model.execute(bad)
    assert len(responses) == 2 and all("onnxruntime failed" in r.error for r in responses)

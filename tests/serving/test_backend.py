"""The Python-backend model (serving/backend/model.py), with a stand-in for Triton's utilities.

It runs inside Triton's Python stub only; here a small fake of `triton_python_backend_utils` lets
the tests call `initialize` and `execute` directly. The serving tests load it in a real server.
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

from serving import configs

SIGNATURE = configs.Signature(n_features=64, n_classes=10)


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


def test_a_lone_request_gets_its_whole_batch_back(tmp_path, params, backend):
    """One request per execute (low load) takes a path that cuts nothing: its rows must all come
    back, in order, as computed for the request alone."""
    folder, config_json = _repository(tmp_path, params, SIGNATURE)
    model = backend.TritonPythonModel()
    model.initialize({"model_config": config_json, "model_repository": str(folder), "model_version": "1"})
    reference = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for rows in (1, 5):
        batch = rng.uniform(0, 16, (rows, 64)).astype(np.float32)
        (response,) = model.execute([{"input": _Tensor("input", batch)}])
        (tensor,) = response.output_tensors
        assert tensor.array.shape == (rows, 10) and tensor.array.dtype == np.float32
        np.testing.assert_allclose(tensor.array, reference.run(None, {"input": batch})[0], rtol=1e-6, atol=1e-7)
    model.finalize()


def test_backend_refuses_config_that_does_not_match_the_onnx_file(tmp_path, params, backend):
    renamed = configs.Signature(64, 10, input_name="pixels", output_name="probabilities")
    folder, config_json = _repository(tmp_path, params, renamed)
    with pytest.raises(Exception, match="pixels"):
        backend.TritonPythonModel().initialize(
            {"model_config": config_json, "model_repository": str(folder), "model_version": "1"}
        )


def test_backend_fails_the_batch_with_the_error_when_onnxruntime_fails(tmp_path, params, backend):
    """Raised, so that Triton fails each request of the batch and counts them as failures."""
    folder, config_json = _repository(tmp_path, params, SIGNATURE)
    model = backend.TritonPythonModel()
    model.initialize({"model_config": config_json, "model_repository": str(folder), "model_version": "1"})
    bad = [
        {"input": _Tensor("input", np.zeros((1, 3), np.float32))},
        {"input": _Tensor("input", np.zeros((2, 3), np.float32))},
    ]
    with pytest.raises(backend.pb_utils.TritonModelException, match="onnxruntime failed"):
        model.execute(bad)


def _initialized(tmp_path, params, backend, export):
    folder, _ = _repository(tmp_path, params, SIGNATURE)
    config = configs.check_config(configs.python_backend_config(export, SIGNATURE))
    config_json = json_format.MessageToJson(config, preserving_proto_field_name=True)
    model = backend.TritonPythonModel()
    model.initialize({"model_config": config_json, "model_repository": str(folder), "model_version": "1"})
    return model


@pytest.mark.parametrize(("threads", "spinning"), [(1, False), (2, True), (0, False)])
def test_onnxruntime_threads_follow_the_config_parameters(tmp_path, params, backend, threads, spinning):
    export = params.export.model_copy(update={"intra_op_threads": threads, "intra_op_spinning": spinning})
    options = _initialized(tmp_path, params, backend, export).session.get_session_options()
    assert options.intra_op_num_threads == threads
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")


def test_a_bad_thread_parameter_fails_the_load(tmp_path, params, backend):
    folder, _ = _repository(tmp_path, params, SIGNATURE)
    config = configs.check_config(configs.python_backend_config(params.export, SIGNATURE))
    config.parameters["intra_op_thread_count"].string_value = "many"
    config_json = json_format.MessageToJson(config, preserving_proto_field_name=True)
    with pytest.raises(Exception, match="intra_op_thread_count must be an integer"):
        backend.TritonPythonModel().initialize(
            {"model_config": config_json, "model_repository": str(folder), "model_version": "1"}
        )

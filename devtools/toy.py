"""A toy candidate in the export stage's layout, built in milliseconds (tests and benchmarks).

`build_candidate` writes what `models/candidate` holds after the export stage (config rendered by
serving/configs.py, the Python-backend model.py, golden samples, model card), around a hand-made
ONNX graph (one linear layer + softmax), so the serving tests and bench/serving_latency.py never
depend on the training pipeline having run. `NOOP_BACKEND` is a Python-backend model with the same
I/O that computes nothing: the ceiling of the local stack.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from pipeline.candidate import CARD_FILE, ENTRY_ONNX_FILE, ENTRY_TORCHSCRIPT_FILE, GOLDEN_FILE, GoldenSamples, ModelCard
from pipeline.params import ExportParams
from serving import configs

BACKEND = Path(__file__).resolve().parents[1] / "serving" / "backend" / "model.py"

# A model.py whose load fails: the server must keep serving the previous version.
FAILING_BACKEND = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        raise pb_utils.TritonModelException("deliberately broken candidate")

    def execute(self, requests):
        return []
"""


def toy_onnx(
    path: Path,
    n_features: int,
    n_classes: int,
    seed: int,
    *,
    retrained: int | None = None,
    shuffled_class: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """softmax(x @ w + b) as an ONNX file with a dynamic batch axis; returns (w, b).

    retrained=k: the same weights with a tiny noise seeded by k (a retrain of the same model with
    another seed: other bytes, the same answers but for a rare near-tie). shuffled_class=c: the
    weights of output c shuffled across the features (the model answers wrong on that class)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n_features, n_classes)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(n_classes) * 0.1).astype(np.float32)
    if retrained is not None:
        w += (np.random.default_rng(retrained).standard_normal(w.shape) * 1e-5).astype(np.float32)
    if shuffled_class is not None:
        w[:, shuffled_class] = np.random.default_rng(seed + 1).permutation(w[:, shuffled_class])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "toy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_classes])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by older onnxruntime builds too
    onnx.save(model, str(path))
    return w, b


def build_candidate(
    out: Path,
    *,
    name: str = "toy",
    seed: int = 0,
    n_features: int = 64,
    n_classes: int = 10,
    dynamic_batching: bool = True,
    max_batch_size: int = 64,
    broken: str | None = None,
    export: ExportParams | None = None,
    backend_source: str | None = None,
    gpu_entries: bool = False,
    retrained: int | None = None,
    shuffled_class: int | None = None,
) -> Path:
    """Write a candidate folder in the export stage's layout.

    broken=None: a good model. "load": model.py raises in initialize. "outputs": the model loads
    and answers, but golden.json expects different outputs (the smoke test must catch it).
    `export` (its model_name is replaced by `name`) overrides the batching arguments;
    `backend_source` replaces serving/backend/model.py (e.g. NOOP_BACKEND).
    gpu_entries: also the GPU server's entries (gpu/<name>/ for onnxruntime, gpu/<name>_torchscript/).
    retrained, shuffled_class: see toy_onnx (the rollout tests' equal and wrong candidates).
    """
    import onnxruntime as ort

    out.mkdir(parents=True, exist_ok=True)
    version = out / "triton" / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    toy_onnx(out / "model.onnx", n_features, n_classes, seed, retrained=retrained, shuffled_class=shuffled_class)
    shutil.copyfile(out / "model.onnx", version / "model.onnx")
    if broken == "load":
        (version / "model.py").write_text(FAILING_BACKEND)
    elif backend_source is not None:
        (version / "model.py").write_text(backend_source)
    else:
        shutil.copyfile(BACKEND, version / "model.py")
    if export is None:
        export = ExportParams(model_name=name, dynamic_batching=dynamic_batching, max_batch_size=max_batch_size)
    export = export.model_copy(update={"model_name": name})
    config = configs.python_backend_config(export, configs.Signature(n_features, n_classes))
    (out / "triton" / name / "config.pbtxt").write_text(config)
    if gpu_entries:
        signature = configs.Signature(n_features, n_classes)
        (out / "gpu" / name / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "model.onnx", out / "gpu" / name / "1" / ENTRY_ONNX_FILE)
        (out / "gpu" / name / "config.pbtxt").write_text(configs.onnx_gpu_config(export, signature))
        torchscript = out / "gpu" / f"{name}_torchscript"
        (torchscript / "1").mkdir(parents=True, exist_ok=True)
        (torchscript / "1" / ENTRY_TORCHSCRIPT_FILE).write_bytes(b"TorchScript placeholder: never loaded here")
        (torchscript / "config.pbtxt").write_text(configs.libtorch_gpu_config(export, signature))

    inputs = np.random.default_rng(1000 + seed).uniform(0, 16, (4, n_features)).astype(np.float32)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(["probabilities"], {"input": inputs})
    if broken == "outputs":
        outputs = outputs[:, ::-1] + 0.25
    golden = GoldenSamples(
        model_name=name,
        inputs=inputs.tolist(),
        outputs=outputs.tolist(),
        labels=outputs.argmax(axis=1).tolist(),
        atol=1e-4,
    )
    (out / GOLDEN_FILE).write_text(json.dumps(golden.to_json()))
    card = ModelCard(
        model_name=name,
        created_at="2026-01-01T00:00:00+00:00",
        git_commit=f"{seed:040x}",
        data={"clean": {"path": "data/clean.parquet", "md5": f"{seed:032x}"}},
        metrics={"val_accuracy": 0.9},
        params={"seed": seed},
        classes=list(range(n_classes)),
    )
    (out / CARD_FILE).write_text(json.dumps(card.to_json()))
    return out


# The same tensors in and out as serving/backend/model.py, and nothing computed in between: what
# Triton, the Python stub and the client cost on their own.
NOOP_BACKEND = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.width = int(config["output"][0]["dims"][0])

    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            zeros = np.zeros((rows.shape[0], self.width), np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, zeros)]))
        return responses
"""


# serving/backend/model.py, with every fifth request answered with an error: a candidate that
# fails 20% of its requests (the rollout tests).
FLAKY_BACKEND = (
    BACKEND.read_text()
    + """

_Working = TritonPythonModel


class TritonPythonModel(_Working):
    def initialize(self, args):
        super().initialize(args)
        self.seen = 0

    def execute(self, requests):
        responses = []
        for response in super().execute(requests):
            self.seen += 1
            failed = pb_utils.TritonError("deliberate failure: one request in five")
            responses.append(pb_utils.InferenceResponse(error=failed) if self.seen % 5 == 0 else response)
        return responses
"""
)

# serving/backend/model.py, waiting SLOW_EXTRA_S after each run: several times slower than the
# same model's whole round trip through the router (the rollout tests check how many times).
SLOW_EXTRA_S = 0.004
SLOW_BACKEND = (
    BACKEND.read_text()
    + f"""

import time as _time

_Quick = TritonPythonModel


class TritonPythonModel(_Quick):
    def execute(self, requests):
        responses = super().execute(requests)
        _time.sleep({SLOW_EXTRA_S!r})
        return responses
"""
)

"""Fixtures for the serving tests: tiny exported candidates and one real Triton server per session.

Candidates follow the export stage's layout (models/candidate) but are built in milliseconds from
a hand-made ONNX graph (one linear layer + softmax), with the export stage's own config renderer
and Python-backend model.py, so these tests never depend on the training pipeline having run.
`build_candidate` is plain code (bench/serving_latency.py reuses it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from support import free_ports, local_triton

ROOT = Path(__file__).resolve().parents[2]
BACKEND = ROOT / "serving" / "backend" / "model.py"

# A model.py whose load fails: the server must keep serving the previous version.
FAILING_BACKEND = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        raise pb_utils.TritonModelException("deliberately broken candidate")

    def execute(self, requests):
        return []
"""


def toy_onnx(path: Path, n_features: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """softmax(x @ w + b) as an ONNX file with a dynamic batch axis; returns (w, b)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n_features, n_classes)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(n_classes) * 0.1).astype(np.float32)
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
    gpu_entries: bool = False,
) -> Path:
    """Write a candidate folder in the export stage's layout.

    broken=None: a good model. "load": model.py raises in initialize. "outputs": the model loads
    and answers, but golden.json expects different outputs (the smoke test must catch it).
    gpu_entries: also the GPU server's entries (gpu/<name>/ for onnxruntime, gpu/<name>_torchscript/).
    """
    import onnxruntime as ort

    from pipeline.params import ExportParams
    from serving import configs

    out.mkdir(parents=True, exist_ok=True)
    version = out / "triton" / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    toy_onnx(out / "model.onnx", n_features, n_classes, seed)
    shutil.copyfile(out / "model.onnx", version / "model.onnx")
    if broken == "load":
        (version / "model.py").write_text(FAILING_BACKEND)
    else:
        shutil.copyfile(BACKEND, version / "model.py")
    export = ExportParams(model_name=name, dynamic_batching=dynamic_batching, max_batch_size=max_batch_size)
    config = configs.python_backend_config(export, configs.Signature(n_features, n_classes))
    (out / "triton" / name / "config.pbtxt").write_text(config)
    if gpu_entries:
        signature = configs.Signature(n_features, n_classes)
        (out / "gpu" / name / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "model.onnx", out / "gpu" / name / "1" / configs.ONNX_FILENAME)
        (out / "gpu" / name / "config.pbtxt").write_text(configs.onnx_gpu_config(export, signature))
        torchscript = out / "gpu" / f"{name}_torchscript"
        (torchscript / "1").mkdir(parents=True, exist_ok=True)
        (torchscript / "1" / configs.TORCHSCRIPT_FILENAME).write_bytes(b"TorchScript placeholder: never loaded here")
        (torchscript / "config.pbtxt").write_text(configs.libtorch_gpu_config(export, signature))

    inputs = np.random.default_rng(1000 + seed).uniform(0, 16, (4, n_features)).astype(np.float32)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(["probabilities"], {"input": inputs})
    if broken == "outputs":
        outputs = outputs[:, ::-1] + 0.25
    golden = {
        "model_name": name,
        "input_name": "input",
        "output_name": "probabilities",
        "inputs": inputs.tolist(),
        "outputs": outputs.tolist(),
        "labels": outputs.argmax(axis=1).tolist(),
        "atol": 1e-4,
    }
    (out / "golden.json").write_text(json.dumps(golden))
    card = {
        "model_name": name,
        "created_at": "2026-01-01T00:00:00+00:00",
        "git_commit": f"{seed:040x}",
        "data": {"clean": {"path": "data/clean.parquet", "md5": f"{seed:032x}"}},
        "metrics": {"val_accuracy": 0.9},
        "params": {"seed": seed},
        "classes": list(range(n_classes)),
    }
    (out / "model_card.json").write_text(json.dumps(card))
    return out


@pytest.fixture
def unused_port() -> int:
    return free_ports(1)[0]


@pytest.fixture
def unused_ports() -> list[int]:
    """Three ports for a server of its own: http, grpc, metrics."""
    return free_ports(3)


@pytest.fixture
def make_candidate(tmp_path: Path) -> Callable[..., Path]:
    """make_candidate(name=..., seed=..., broken=...) -> a fresh candidate folder."""
    counter = iter(range(1_000_000))

    def make(**kwargs) -> Path:
        return build_candidate(tmp_path / f"candidate-{next(counter)}", **kwargs)

    return make


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One real tritonserver for the session, on free ports, stopped by its PID at the end."""
    with local_triton(tmp_path_factory.mktemp("triton")) as settings:
        yield settings


@pytest.fixture(scope="session")
def serving_settings(triton_server):
    """Push/status/rollback settings aimed at the session's server, with short retries."""
    from serving.client import ClientSettings
    from serving.push import ServingSettings

    client = ClientSettings(url=f"127.0.0.1:{triton_server.http_port}", timeout_s=30.0, retries=1, backoff_s=0.1)
    return ServingSettings(client=client, repository=triton_server.repository, load_timeout_s=60.0, retention=3)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted on a fresh folder: a disk that really fills up. Unmounted afterwards."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(
            "mounting a size-limited tmpfs needs root (CAP_SYS_ADMIN), which this machine does not give: "
            + (result.stderr.strip() or f"mount exited {result.returncode}")
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


@pytest.fixture
def fill_disk() -> Callable[[Path], None]:
    """fill_disk(folder): write a filler file there until its filesystem has no byte left."""

    def fill(folder: Path) -> None:
        chunk = b"\0" * 4096
        with open(folder / "filler", "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(chunk)
            except OSError:
                pass
        with open(folder / "filler-tail", "wb", buffering=0) as handle:  # the last partial block
            try:
                while True:
                    handle.write(b"\0")
            except OSError:
                pass

    return fill

"""Every model family trains on tiny data through the train stage's core, exports to ONNX and
TorchScript through the export stage's core with its parity check over the test split, and (one
test, all families) serves on a real local Triton with nothing else changed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_image_table

from pipeline import atomic
from pipeline.params import Params, parse_params
from pipeline.rows import SplitTable
from serving.gpu_entries import check_gpu_entries
from stages import export, train
from stages.split import split_stratified

ROOT = Path(__file__).resolve().parents[2]

# Small sizes of every family, so each trains in about a second.
TINY_MODEL = {
    "channels": [8],
    "hidden": [32],
    "dropout": 0.1,
    "rnn": {"cell": "lstm", "hidden_size": 32, "layers": 2},
    "transformer": {"patch_size": 2, "dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64},
}
CASES = [
    ("cnn", "image"),
    ("mlp", "image"),
    ("mlp", "tabular"),
    ("rnn", "image"),
    ("rnn", "tabular"),
    ("transformer", "image"),
    ("transformer", "tabular"),
]


def tabular_table(rows: int = 240) -> pd.DataFrame:
    """The first rows of scikit-learn's breast cancer set as `embed` writes it (label, x0..x29)."""
    from pipeline.params import DataParams, EmbedParams
    from stages.embed import run as embed

    data = DataParams(source="unused", label="label", feature_prefix="", classes=[0, 1])
    return embed(EmbedParams(dataset="breast_cancer"), data).iloc[:rows].reset_index(drop=True)


def family_params(arch: str, rows: str, **train) -> Params:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"] |= {"epochs": 4, "batch_size": 16, "device": "cpu", **train}
    raw["train"]["model"] = {"arch": arch, **TINY_MODEL}
    raw["train"]["families"] = {}  # the tiny sizes above, not each family's defaults
    raw["export"]["model_name"] = f"{arch}_{rows}"
    if rows == "tabular":
        raw["data"] |= {"feature_prefix": "", "image_shape": None, "value_range": None, "classes": [0, 1]}
    return parse_params(raw)


def train_and_export(arch: str, rows: str, out: Path) -> dict:
    """Train with the train stage's core, export with the export stage's; returns the model card."""
    table = tiny_image_table() if rows == "image" else tabular_table()
    params = family_params(arch, rows)
    assignment = split_stratified(table[params.data.label].to_numpy(), params.split)
    split_table = SplitTable.of(table, assignment, params.data)
    result, config, _ = train.run(split_table, params.data, params.train)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]  # it learns
    test = split_table.split_rows("test")
    model_file = {"config": config, "metrics": result.metrics, "params": params.train.model_dump(mode="json")}
    hashes = {"clean": {"path": "c", "md5": "0" * 32}, "split": {"path": "s", "md5": "1" * 32}}
    with atomic.atomic_dir(out) as tmp:
        Path(tmp).chmod(0o755)
        return export.run(result.model, model_file, test, params.data, params.export, Path(tmp), hashes).to_json()


@pytest.mark.parametrize("arch,rows", CASES)
def test_a_family_trains_and_exports_with_parity(arch, rows, tmp_path):
    card = train_and_export(arch, rows, tmp_path / "candidate")
    tolerance = family_params(arch, rows).export.parity_tolerance
    assert card["model_config"]["arch"] == arch and card["parity"]["tolerance"] == tolerance
    # export.run refuses a difference above the tolerance; both formats were compared.
    assert set(card["parity"]["max_abs_diff"]) == {"onnx", "torchscript"}
    assert max(card["parity"]["max_abs_diff"].values()) <= tolerance
    assert (tmp_path / "candidate" / f"triton/{arch}_{rows}/1/model.onnx").exists()
    # the GPU server's entries load as their backends load them (TorchScript on another device)
    name = f"{arch}_{rows}"
    assert check_gpu_entries(tmp_path / "candidate") == [f"gpu/{name}", f"gpu/{name}_torchscript"]
    assert device_constants(tmp_path / "candidate" / export.TORCHSCRIPT_FILE) == []


def device_constants(path: Path) -> list[str]:
    """The devices a TorchScript file's graph holds as constants (a trace froze them in): read off
    the printed graph, independently of serving.gpu_entries."""
    import re

    import torch

    graph = str(torch.jit.load(str(path), map_location="cpu").inlined_graph)
    return re.findall(r': Device = prim::Constant\[value="([^"]+)"\]', graph)


def test_a_gpu_entry_traced_with_a_fixed_device_is_refused(tmp_path):
    """What the check is for: a module that makes a tensor on the tracing device (as torch's own
    LSTM does for its initial state) would meet CUDA inputs on a GPU server with a CPU tensor."""
    import torch

    from serving.configs import ConfigError

    class FixedDevice(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x[:, :10] + torch.zeros(x.shape[0], 10, device=x.device), dim=1)

    card = train_and_export("mlp", "image", tmp_path / "candidate")
    entry = tmp_path / "candidate" / "gpu" / f"{card['model_name']}_torchscript"
    export.export_torchscript(FixedDevice(), 64, entry / "1" / "model.pt")
    assert device_constants(entry / "1" / "model.pt") != []
    with pytest.raises(ConfigError, match=r"gpu/mlp_image_torchscript: model.pt fails on inputs of another device"):
        check_gpu_entries(tmp_path / "candidate")
    (entry / "config.pbtxt").unlink()  # that entry aside: an onnxruntime entry that disagrees with its file
    onnx_config = tmp_path / "candidate" / "gpu" / card["model_name"] / "config.pbtxt"
    onnx_config.write_text(onnx_config.read_text().replace("dims: 10", "dims: 11"))
    with pytest.raises(
        ConfigError, match=r"gpu/mlp_image: outputs of shapes \[\(\d+, 10\)\] .* declares \[\(\d+, 11\)\]"
    ):
        check_gpu_entries(tmp_path / "candidate")


def test_an_image_family_exports_batches_of_any_size(tmp_path):
    """The traced TorchScript file and the ONNX graph keep a dynamic batch axis (LSTM, attention)."""
    import onnxruntime as ort
    import torch

    for arch in ("rnn", "transformer"):
        out = tmp_path / arch
        train_and_export(arch, "image", out)
        rows = np.random.default_rng(0).uniform(0, 16, (37, 64)).astype(np.float32)
        session = ort.InferenceSession(str(out / export.ONNX_FILE), providers=["CPUExecutionProvider"])
        (onnx_out,) = session.run(None, {"input": rows})
        ts_out = torch.jit.load(str(out / export.TORCHSCRIPT_FILE)).eval()(torch.from_numpy(rows)).detach().numpy()
        assert onnx_out.shape == ts_out.shape == (37, 10)
        assert np.allclose(onnx_out, ts_out, atol=1e-4) and np.allclose(onnx_out.sum(1), 1, atol=1e-5)


@pytest.mark.triton
def test_every_family_serves_on_a_real_triton(tmp_path):
    from support import local_triton

    from serving.client import ClientSettings, TritonClient
    from serving.push import push_candidate
    from serving.settings import ServingSettings

    candidates = {f"{arch}_image": tmp_path / arch for arch in ("cnn", "mlp", "rnn", "transformer")}
    candidates["transformer_tabular"] = tmp_path / "transformer_tabular"
    for name, folder in candidates.items():
        train_and_export(*name.split("_"), folder)

    with local_triton(tmp_path / "triton") as server:
        client = ClientSettings.local(server, timeout_s=30.0, retries=1, backoff_s=0.1)  # with its control key
        settings = ServingSettings(client=client, repository=server.repository, load_timeout_s=60.0, retention=3)
        for name, folder in candidates.items():
            result = push_candidate(folder, settings)
            assert (result.status, result.serving) == ("pushed", 1), name
            golden = yaml.safe_load((folder / "golden.json").read_text())
            with TritonClient(settings.client) as triton:
                served = triton.predict(name, np.asarray(golden["inputs"], dtype=np.float32))
            assert np.allclose(served, np.asarray(golden["outputs"]), atol=golden["atol"]), name


def test_the_card_records_the_typed_config_as_plain_data(tmp_path):
    card = train_and_export("rnn", "tabular", tmp_path / "c")
    config = card["model_config"]
    assert config == {**config, "arch": "rnn", "cell": "lstm", "image_shape": None, "n_features": 30}
    assert dataclasses.is_dataclass(family_params("rnn", "tabular").train.model) is False  # params stay pydantic


# --- each family's defaults (train.families) pass the gate's floors on digits ------------------


def digits_split(params: Params) -> SplitTable:
    """The embedded digits as the pipeline splits them (the embed stage's table, the split stage's
    assignment): the rows `dvc repro split` gives."""
    from stages import embed

    table = embed.run(params.embed, params.data)
    return SplitTable.of(table, split_stratified(table[params.data.label].to_numpy(), params.split), params.data)


def committed_family(arch: str) -> Params:
    """params.yaml as committed with `arch` picked: that family's defaults apply."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["model"]["arch"] = arch
    return parse_params(raw)


def test_the_mlp_defaults_pass_the_gate_on_digits(params, tmp_path):
    """The cheapest family end to end as a run takes it: trained with its defaults, exported, its
    ONNX file scored on the test split by the evaluate stage, judged by the gate's floors."""
    from stages import evaluate, gate

    family = committed_family("mlp")
    table = digits_split(family)
    result, config, _ = train.run(table, family.data, family.train, progress=False)
    model_file = {"config": config, "metrics": result.metrics, "params": family.train.model_dump(mode="json")}
    hashes = {"clean": {"path": "c", "md5": "0" * 32}, "split": {"path": "s", "md5": "1" * 32}}
    with atomic.atomic_dir(tmp_path / "candidate") as tmp:
        export.run(result.model, model_file, table.split_rows("test"), family.data, family.export, Path(tmp), hashes)
    scores = evaluate.run(tmp_path / "candidate", evaluate.test_rows(table), family.data).metrics
    decision = gate.decide(scores, None, params.gate)
    assert decision.passed, decision.reason
    assert config.arch == "mlp" and config.hidden == (256, 128)  # the family's own sizes, not the shared


@pytest.mark.parametrize("arch", ["rnn", "transformer"])  # the mlp's: the test above
def test_each_familys_defaults_pass_the_floors_on_digits(arch, params):
    """Trained with its defaults, the family's kept weights score above the gate's floors on the
    test split (the shared keys alone leave the rnn and the transformer below them)."""
    from pipeline.compute import device_tensors
    from pipeline.training import evaluate
    from stages import gate

    family = committed_family(arch)
    table = digits_split(family)
    result, config, _ = train.run(table, family.data, family.train, progress=False)
    scores = evaluate(result.model, *device_tensors(table.split_rows("test")), config.n_classes)
    decision = gate.decide(scores, None, params.gate)
    assert decision.passed, decision.reason

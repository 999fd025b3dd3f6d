"""export: parity of both formats, the parity gate, the candidate layout, and export params."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from conftest import tiny_image_table
from tritonclient.grpc import model_config_pb2 as pb

from pipeline import atomic, lineage
from pipeline.models import CNNConfig, build_model
from pipeline.params import ParamsError, parse_params
from pipeline.rows import Rows, SplitTable
from serving import configs
from stages import _cli, _parity, export


def assignment_for(table: pd.DataFrame) -> pd.DataFrame:
    """Every third row is a test row, the rest train (enough for a fixture, no stratification)."""
    rows = np.arange(len(table))
    split = np.where(rows % 3 == 0, "test", "train")
    return pd.DataFrame({"row": rows, "split": pd.Categorical(split, ["train", "val", "test"]), "fold": -1})


def split_rows(table: pd.DataFrame, params, split: str) -> Rows:
    return SplitTable.of(table, assignment_for(table), params.data).split_rows(split)


def tiny_model(table: pd.DataFrame, params, steps: int = 25) -> tuple[torch.nn.Module, dict]:
    """A small CNN trained for a few Adam steps: confident outputs, as a real model gives."""
    config = CNNConfig(64, params.data.classes, params.data.image_shape, 0.1, channels=[4, 8], hidden=[16])
    torch.manual_seed(0)
    model = build_model(config)
    model.scale.factor.fill_(1 / 16)  # value_range [0, 16] -> [0, 1], as training sets it
    rows = split_rows(table, params, "train")
    x, y = torch.from_numpy(rows.float32()), torch.from_numpy(rows.y)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small only lose time to threads on shared cores
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval(), {"config": config, "metrics": {"val_accuracy": 0.5}, "params": {"seed": 123}}


def hashes() -> dict:
    return {
        "clean": {"path": "data/clean.parquet", "md5": "0" * 32},
        "split": {"path": "data/split.parquet", "md5": "1" * 32},
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory, params):
    """One export shared by the tests that only read its output (the dynamo exporter takes seconds)."""
    table = tiny_image_table()
    model, model_file = tiny_model(table, params)
    test = split_rows(table, params, "test")
    out = tmp_path_factory.mktemp("export") / "candidate"
    with atomic.atomic_dir(out) as tmp:
        card = export.run(
            model, model_file, test, params.data, params.export, Path(tmp), hashes(), source=PINNED
        ).to_json()
    return out, card, model, test


# What pipeline.sources.read_pin(...).to_dict() gives for a pinned bucket prefix.
PINNED = {
    "source": "s3://data-bucket/digits/",
    "objects": [
        {
            "url": "s3://data-bucket/digits/day=2026-01-05/part-0.parquet",
            "size": 1234,
            "version_id": "v1",
            "etag": "0123abcd",
            "partition": {"day": "2026-01-05"},
        }
    ],
}


def test_the_card_lists_the_pinned_objects_the_data_came_from(exported):
    out, card, _, _ = exported
    assert card["source"] == PINNED
    assert json.loads((out / "model_card.json").read_text())["source"] == PINNED


def test_onnx_and_torchscript_match_pytorch(exported, params):
    out, card, model, test = exported
    tolerance = params.export.parity_tolerance
    assert card["parity"]["rows"] == len(test)
    assert 0 <= card["parity"]["max_abs_diff"]["onnx"] <= tolerance
    assert 0 <= card["parity"]["max_abs_diff"]["torchscript"] <= tolerance

    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(test.float32())), dim=1).numpy()
    # Batch sizes other than the one traced/exported with: the batch axis is dynamic.
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    scripted = torch.jit.load(str(out / "model.ts"))
    for n in (1, 5, len(expected)):
        (onnx_out,) = session.run(["probabilities"], {"input": test.float32(0, n)})
        np.testing.assert_allclose(onnx_out, expected[:n], atol=tolerance)
        np.testing.assert_allclose(
            scripted(torch.from_numpy(test.float32(0, n))).detach().numpy(), expected[:n], atol=tolerance
        )
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)  # softmax is inside the graph


def test_onnx_file_is_self_contained_with_a_symbolic_batch_axis(exported, params):
    """What the dynamo exporter is asked for: the opset of params, the weights inside the one file
    that Triton's entries copy (no external data file), a named dynamic batch axis on both ends."""
    out, *_ = exported
    assert not list(out.glob("*.data"))
    graph = onnx.load(str(out / "model.onnx"))  # would fail on a missing external data file
    onnx.checker.check_model(graph, full_check=True)
    assert [(o.domain, o.version) for o in graph.opset_import if o.domain == ""] == [("", params.export.opset)]
    for value, width in ((graph.graph.input[0], 64), (graph.graph.output[0], 10)):
        dims = value.type.tensor_type.shape.dim
        assert (dims[0].dim_param, dims[1].dim_value) == ("batch", width), value.name


def test_candidate_layout_is_complete(exported, params, project_root):
    out, card, _, test = exported
    name = params.export.model_name
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        [
            "model.onnx",
            "model.ts",
            "model_card.json",
            "golden.json",
            f"triton/{name}/config.pbtxt",
            f"triton/{name}/1/model.py",
            f"triton/{name}/1/model.onnx",
            f"gpu/{name}/config.pbtxt",
            f"gpu/{name}/1/model.onnx",
            f"gpu/{name}_torchscript/config.pbtxt",
            f"gpu/{name}_torchscript/1/model.pt",
        ]
    )
    assert (out / f"triton/{name}/1/model.py").read_bytes() == (project_root / "serving/backend/model.py").read_bytes()
    assert (out / f"triton/{name}/1/model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    assert (out / f"gpu/{name}_torchscript/1/model.pt").read_bytes() == (out / "model.ts").read_bytes()

    python = configs.check_config((out / f"triton/{name}/config.pbtxt").read_text())
    assert (python.name, python.backend, python.instance_group[0].kind) == (
        name,
        "python",
        pb.ModelInstanceGroup.KIND_CPU,
    )
    gpu = configs.check_config((out / f"gpu/{name}/config.pbtxt").read_text())
    assert (gpu.backend, gpu.instance_group[0].kind) == ("onnxruntime", pb.ModelInstanceGroup.KIND_GPU)
    libtorch = configs.check_config((out / f"gpu/{name}_torchscript/config.pbtxt").read_text())
    assert (libtorch.name, libtorch.platform) == (f"{name}_torchscript", "pytorch_libtorch")

    on_disk = json.loads((out / "model_card.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert on_disk["data"]["clean"]["md5"] == "0" * 32
    assert on_disk["params"]["export"] == params.export.model_dump()
    assert on_disk["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert on_disk["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert on_disk["metrics"] == {"val_accuracy": 0.5}
    assert on_disk["params"]["train"] == {"seed": 123}  # as stored in the model file

    golden = json.loads((out / "golden.json").read_text())
    assert golden["model_name"] == name and golden["atol"] == params.export.parity_tolerance
    assert len(golden["inputs"]) == len(golden["outputs"]) == len(golden["labels"]) == params.export.golden_samples
    assert len(set(golden["labels"])) == params.export.golden_samples  # one row per class, in turn
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (served,) = session.run([golden["output_name"]], {golden["input_name"]: np.array(golden["inputs"], np.float32)})
    np.testing.assert_allclose(served, golden["outputs"], atol=golden["atol"])


@pytest.mark.parametrize(("writer", "fmt"), [("export_onnx", "ONNX"), ("export_torchscript", "TorchScript")])
def test_parity_failure_stops_the_export(tmp_path, image_table, params, monkeypatch, writer, fmt):
    """An exported file that drifts from the model fails the stage and leaves the old candidate."""
    original = getattr(export, writer)

    def drifted(module, *args):
        # Export a model whose input scaling is slightly off: a plausible exporter bug.
        broken = copy.deepcopy(module)
        broken.model.scale.factor.mul_(1.05)
        original(broken, *args)

    model, model_file = tiny_model(image_table, params)
    monkeypatch.setattr(export, writer, drifted)
    test = split_rows(image_table, params, "test")
    out = tmp_path / "candidate"
    out.mkdir()
    (out / "model.onnx").write_text("the last good candidate")
    with (
        pytest.raises(_cli.StageError, match=rf"{fmt} export differs.*export\.parity_tolerance"),
        atomic.atomic_dir(out) as tmp,
    ):
        export.run(model, model_file, test, params.data, params.export, Path(tmp), hashes())
    assert [p.name for p in out.iterdir()] == ["model.onnx"]
    assert (out / "model.onnx").read_text() == "the last good candidate"


def test_check_parity_reports_diff_and_key():
    expected = np.full((3, 2), 0.5, np.float32)
    assert _parity.check_parity("ONNX", expected, expected + 1e-6, 1e-4) == pytest.approx(1e-6, rel=0.1)
    with pytest.raises(_parity.ParityError, match=r"max abs diff 0\.01 > export\.parity_tolerance 0\.0001"):
        _parity.check_parity("ONNX", expected, expected + 0.01, 1e-4)
    with pytest.raises(_parity.ParityError, match="parity_tolerance"):
        _parity.check_parity("ONNX", expected, expected * np.nan, 1e-4)


def test_model_for_other_classes_is_refused(tmp_path, image_table, params):
    model, model_file = tiny_model(image_table, params, steps=0)
    model_file["config"] = dataclasses.replace(model_file["config"], classes=tuple(range(1, 11)))
    test = split_rows(image_table, params, "test")
    with pytest.raises(_cli.StageError, match="data.classes"):
        export.run(model, model_file, test, params.data, params.export, tmp_path, hashes())


def test_golden_indices_take_classes_in_turn():
    labels = np.array([0, 0, 0, 1, 1, 2])
    assert export.golden_indices(labels, 3).tolist() == [0, 3, 5]
    assert export.golden_indices(labels, 5).tolist() == [0, 1, 3, 4, 5]
    assert export.golden_indices(labels, 100).tolist() == list(range(6))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"modle_name": "digits"}, "export.modle_name"),  # unknown key
        ({"max_batch_size": "64"}, "export.max_batch_size"),  # wrong type
        ({"parity_tolerance": -1.0}, "export.parity_tolerance"),  # impossible value
        ({"model_name": "../evil"}, "export.model_name"),  # path traversal
        ({"model_name": "a/b"}, "export.model_name"),
        ({"model_name": "has space"}, "export.model_name"),
        ({"opset": 9}, "export.opset"),
        ({"opset": 17}, "export.opset"),  # below what the dynamo exporter writes
        ({"dynamic_batching": "yes"}, "export.dynamic_batching"),
        ({"preferred_batch_sizes": [512]}, "preferred_batch_sizes"),  # above max_batch_size 256
    ],
)
def test_bad_export_params_name_the_key(params, change, key):
    raw = params.model_dump()
    raw["export"] = {**raw["export"], **change}
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        parse_params(raw)


def test_file_md5_is_what_dvc_records(tmp_path):
    from dvc_data.hashfile.hash import file_md5

    path = tmp_path / "file.bin"
    path.write_bytes(b"PAR1 hello\r\n" * 1000)  # DVC 3 hashes the bytes as they are
    assert lineage.file_md5(path) == file_md5(str(path))


def test_a_folder_md5_is_what_dvc_records(tmp_path):
    """clean and split write folders of parts; DVC records a folder as the md5 of its listing."""
    from dvc_data.hashfile.hash import file_md5
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    folder = tmp_path / "clean.parquet"
    folder.mkdir()
    for i in (0, 1, 10):
        (folder / f"part-{i:06d}.parquet").write_bytes(b"PAR1 part %d" % i)
    tree = Tree()
    for part in folder.iterdir():
        tree.add((part.name,), Meta(), HashInfo("md5", file_md5(str(part))))
    tree.digest()
    assert lineage.file_md5(folder) == tree.hash_info.value

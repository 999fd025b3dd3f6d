"""novelty stage and export's second output: parity of both outputs, configs, golden rows, card."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from novelty_support import export_with_novelty

from pipeline import atomic, autoencoder
from pipeline.errors import StageError
from serving import configs
from stages import export


@pytest.fixture(scope="module")
def exported(tmp_path_factory, params):
    out = tmp_path_factory.mktemp("export") / "candidate"
    card, rows, (model, ae, threshold) = export_with_novelty(out, params)
    x = torch.from_numpy(rows["test"].float32())
    with torch.no_grad():  # what the served graphs must give, computed apart from the exporter
        expected = torch.softmax(model(x), dim=1).numpy(), (ae(x) / threshold).numpy()
    return out, card, rows["test"].float32(), expected


def test_onnx_and_torchscript_give_both_outputs_like_pytorch(exported, params):
    out, card, x, (probabilities, novelty) = exported
    tolerance = params.export.parity_tolerance
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "novelty"]
    onnx_p, onnx_n = session.run(None, {"input": x})
    traced = torch.jit.load(str(out / "model.ts"))
    with torch.no_grad():
        ts_p, ts_n = (t.numpy() for t in traced(torch.from_numpy(x)))
    for p, n in ((onnx_p, onnx_n), (ts_p, ts_n)):
        assert n.shape == (len(x), 1)
        np.testing.assert_allclose(p, probabilities, atol=tolerance)
        np.testing.assert_allclose(n, novelty, atol=tolerance)
    assert set(card["parity"]["max_abs_diff"]["onnx"]) == {"probabilities", "novelty"}
    assert max(card["parity"]["max_abs_diff"]["torchscript"].values()) <= tolerance


def test_every_entry_declares_both_outputs(exported):
    out, _, _, _ = exported
    name = "digits"
    expected = {
        f"triton/{name}": [("probabilities", [10]), ("novelty", [1])],
        f"gpu/{name}": [("probabilities", [10]), ("novelty", [1])],
        f"gpu/{name}_torchscript": [("output__0", [10]), ("output__1", [1])],
    }
    for folder, outputs in expected.items():
        config = configs.check_config((out / folder / "config.pbtxt").read_text())
        assert [(o.name, list(o.dims)) for o in config.output] == outputs, folder


def test_golden_rows_and_card_cover_novelty(exported):
    out, card, _, _ = exported
    golden = json.loads((out / "golden.json").read_text())
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (served,) = session.run(["novelty"], {"input": np.array(golden["inputs"], np.float32)})
    np.testing.assert_allclose(served, golden["more_outputs"]["novelty"], atol=golden["atol"])
    assert [o["name"] for o in card["outputs"]] == ["probabilities", "novelty"]
    assert card["outputs"][1]["shape"] == [-1, 1]
    assert card["novelty"]["threshold"] > 0 and card["novelty"]["output"] == "novelty"


def test_a_conv_autoencoder_exports_with_parity_too(tmp_path, params):
    """Transposed convolutions and reshapes with a dynamic batch axis: ONNX and TorchScript agree."""
    card, _, (_, ae, _) = export_with_novelty(tmp_path / "candidate", params, arch="conv", epochs=2)
    assert ae.config.kind == "conv" and card["novelty"]["model_config"]["kind"] == "conv"
    diffs = [*card["parity"]["max_abs_diff"]["onnx"].values(), *card["parity"]["max_abs_diff"]["torchscript"].values()]
    assert max(diffs) <= params.export.parity_tolerance


def test_novelty_parity_failure_stops_the_export(tmp_path, params, monkeypatch):
    """An ONNX file whose novelty output drifts (probabilities intact) fails like any parity miss."""
    original = export.export_onnx

    def drifted(module, *args):
        broken = copy.deepcopy(module)
        broken.inverse_threshold.mul_(1.05)
        original(broken, *args)

    monkeypatch.setattr(export, "export_onnx", drifted)
    out = tmp_path / "candidate"
    with pytest.raises(StageError, match=r"ONNX novelty export differs.*parity_tolerance"):
        export_with_novelty(out, params)
    assert not out.exists()


def test_an_autoencoder_of_another_width_is_refused(tmp_path, params):
    from novelty_support import classifier

    model, model_file = classifier(params)
    config = autoencoder.AutoencoderConfig.of(params.novelty, params.data.model_copy(update={"image_shape": None}), 30)
    with pytest.raises(StageError, match="30 features.*rerun novelty"), atomic.atomic_dir(tmp_path / "c") as tmp:
        rows = export.Rows(np.zeros((4, 64), np.uint8), np.zeros(4, np.int64))
        export.run(
            model, model_file, rows, params.data, params.export, Path(tmp), {}, (autoencoder.Autoencoder(config), 1.0)
        )


def test_disabled_stage_writes_the_off_form_without_torch(tmp_path, params, project_root):
    """Off by default: no table is read and torch is never imported (the stage costs a Python
    start); export then serves the classifier alone."""
    assert params.novelty.enabled is False
    out, metrics = tmp_path / "novelty.pt", tmp_path / "novelty.json"
    script = (
        "import sys; from stages import novelty; novelty.main(); "
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, 'the disabled stage imported torch/pandas'"
    )
    args = ["--clean", "absent.parquet", "--split", "absent.parquet", "--out", str(out), "--metrics", str(metrics)]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=project_root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(metrics.read_text()) == {"enabled": False}
    assert autoencoder.load(out)[0] is None

"""The model architectures and the model file: shapes, round trip, and refusing unsafe files."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import StageError
from pipeline.models import FORMAT, build_model, load_model, model_config, save_model


def _config(arch: str = "cnn", image_shape=(8, 8)) -> dict:
    return model_config(arch, 64, list(range(10)), list(image_shape) if image_shape else None, [4, 8], [16], 0.1)


@pytest.mark.parametrize("arch,image_shape", [("cnn", (8, 8)), ("mlp", None), ("cnn", (4, 16))])
def test_models_map_raw_rows_to_logits(arch, image_shape):
    model = build_model(_config(arch, image_shape)).eval()
    assert model(torch.rand(5, 64) * 16).shape == (5, 10)


def test_scale_is_part_of_the_state_dict():
    model = build_model(_config())
    assert {"scale.offset", "scale.factor"} <= set(model.state_dict())


def test_model_file_round_trips(tmp_path):
    torch.manual_seed(0)
    model, config = build_model(_config()).eval(), _config()
    model.scale.factor.fill_(1 / 16)
    save_model(tmp_path / "model.pt", model, config, metrics={"val_accuracy": 0.5})
    loaded, blob = load_model(tmp_path / "model.pt")
    assert blob["format"] == FORMAT and blob["config"] == config and blob["metrics"] == {"val_accuracy": 0.5}
    x = torch.rand(3, 64) * 16
    assert torch.equal(loaded(x), model(x))


class _RunsCode:
    """Unpickling this calls `touch` on a file: the stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_a_model_file_that_would_run_code_is_refused(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "model.pt"
    state = build_model(_config()).state_dict()
    torch.save({"format": FORMAT, "config": _config(), "state_dict": state, "x": _RunsCode(marker)}, path)

    with pytest.raises(StageError, match="refused"):
        load_model(path)
    assert not marker.exists()

    # The file really is hostile: an unsafe load runs its code.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_file_of_another_format_is_refused(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(StageError, match="not a model file"):
        load_model(tmp_path / "other.pt")

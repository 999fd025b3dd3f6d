"""The model families and the model file: shapes, the typed config, round trips, and refusing
unsafe files."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from pipeline.errors import StageError
from pipeline.models import (
    FAMILIES,
    FORMAT,
    CNNConfig,
    MLPConfig,
    build_model,
    config_for,
    config_from_dict,
    load_model,
    save_model,
)
from pipeline.params import ParamsError, parse_params

CLASSES = tuple(range(10))


def _config(arch: str = "cnn", image_shape=(8, 8)):
    raw = {"arch": arch, "channels": [4, 8], "hidden": [16], "dropout": 0.1}
    raw |= {"rnn": {"cell": "lstm", "hidden_size": 12, "layers": 2}}
    raw |= {"transformer": {"patch_size": 2, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 24}}
    params = parse_params(
        {
            "data": {"source": "x", "label": "label", "image_shape": list(image_shape) if image_shape else None}
            | {"classes": list(CLASSES)},
            "train": {"model": raw},
        }
    )
    return config_for(params.train.model, params.data, 64)


FAMILY_SHAPES = [
    ("cnn", (8, 8)),
    ("cnn", (4, 16)),
    ("mlp", None),
    ("rnn", (8, 8)),
    ("rnn", None),
    ("transformer", (8, 8)),
    ("transformer", (4, 16)),
    ("transformer", None),
]


@pytest.mark.parametrize("arch,image_shape", FAMILY_SHAPES)
def test_models_map_raw_rows_to_logits(arch, image_shape):
    model = build_model(_config(arch, image_shape)).eval()
    assert model(torch.rand(5, 64) * 16).shape == (5, 10)
    assert model(torch.rand(1, 64) * 16).shape == (1, 10)


def test_every_family_is_registered_and_selectable_in_params():
    assert set(FAMILIES) == {"cnn", "mlp", "rnn", "transformer"}
    for arch in FAMILIES:
        assert type(_config(arch)).arch == arch


@pytest.mark.parametrize("arch", ["cnn", "mlp", "rnn", "transformer"])
def test_scale_is_part_of_the_state_dict(arch):
    assert {"scale.offset", "scale.factor"} <= set(build_model(_config(arch)).state_dict())


def test_the_config_is_typed_and_frozen():
    config = _config("cnn")
    assert isinstance(config, CNNConfig) and config.channels == (4, 8) and config.n_classes == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dropout = 0.5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        _ = config.chanels  # type: ignore[attr-defined]


@pytest.mark.parametrize("arch", ["cnn", "mlp", "rnn", "transformer"])
def test_the_config_round_trips_as_plain_data(arch):
    config = _config(arch)
    plain = config.to_dict()
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # nothing but plain values
    assert config_from_dict(plain, FAMILIES) == config


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda d: d.update(chanels=d.pop("channels")),
            r"unknown key\(s\) \['chanels'\], missing key\(s\) \['channels'\]",
        ),
        (lambda d: d.update(arch="resnet"), "unknown arch 'resnet'"),
        (lambda d: d.pop("classes"), r"missing key\(s\) \['classes'\]"),
    ],
)
def test_a_misspelt_or_unknown_config_key_fails_at_once(change, message):
    plain = _config("cnn").to_dict()
    change(plain)
    with pytest.raises(StageError, match=message):
        config_from_dict(plain, FAMILIES)


@pytest.mark.parametrize(
    "model,key",
    [
        ({"arch": "transformer", "transformer": {"patch_size": 3}}, "patch_size 3 must divide"),
        ({"arch": "transformer", "transformer": {"dim": 30, "heads": 4}}, "dim 30 must be a multiple of heads 4"),
        ({"arch": "rnn", "rnn": {"cell": "elman"}}, r"train\.model\.rnn\.cell"),
        ({"arch": "rnn", "rnn": {"hiden_size": 3}}, r"train\.model\.rnn\.hiden_size: unknown key"),
    ],
)
def test_bad_family_params_name_the_key(model, key):
    raw = {
        "data": {"source": "x", "label": "label", "image_shape": [8, 8], "classes": [0, 1]},
        "train": {"model": model},
    }
    with pytest.raises(ParamsError, match=key):
        parse_params(raw)


@pytest.mark.parametrize("arch", ["cnn", "mlp", "rnn", "transformer"])
def test_model_file_round_trips(tmp_path, arch):
    torch.manual_seed(0)
    config = _config(arch)
    model = build_model(config).eval()
    model.scale.factor.fill_(1 / 16)
    save_model(tmp_path / "model.pt", model, config, metrics={"val_accuracy": 0.5})
    raw = torch.load(tmp_path / "model.pt", weights_only=True)  # plain data only
    assert raw["config"] == config.to_dict()
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
    config = _config()
    state = build_model(config).state_dict()
    torch.save({"format": FORMAT, "config": config.to_dict(), "state_dict": state, "x": _RunsCode(marker)}, path)

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


def test_a_config_can_be_built_directly():
    config = MLPConfig(n_features=4, classes=["a", "b"], image_shape=None, dropout=0.0, hidden=[3])
    assert config.classes == ("a", "b") and config.hidden == (3,)
    assert build_model(config)(torch.zeros(2, 4)).shape == (2, 2)

"""The `sweep:` section's schema and the space written into params.yaml: a bad space is a
ParamsError naming the key before any trial runs; trial values land in params.yaml as values the
stages read back, with every comment kept."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from orchestration.params import parse_project_params
from orchestration.sweep import space
from orchestration.sweep.params import SweepParams
from pipeline.params import ParamsError, parse_params

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "params.yaml").read_text()


def with_sweep(**section) -> dict:
    raw = yaml.safe_load(TEXT)
    raw["sweep"] = {**copy.deepcopy(raw["sweep"]), **section}
    return raw


def error_of(raw: dict) -> str:
    with pytest.raises(ParamsError) as caught:
        parse_project_params(raw, "params.yaml")
    return str(caught.value)


def test_the_committed_section_is_off_and_its_space_fits_train(params) -> None:
    assert params.sweep.enabled is False
    assert set(params.sweep.space) == {"train.optimizer.lr", "train.model.channels", "train.epochs"}
    parse_params(yaml.safe_load(TEXT))  # a stage reads the file with the sweep: section in it


def test_unknown_key_names_it() -> None:
    assert "sweep.trails: unknown key" in error_of(with_sweep(trails=4))


def test_a_key_outside_train_is_refused() -> None:
    message = error_of(with_sweep(space={"export.opset": {"choices": [18, 19]}}))
    assert "'export.opset'" in message and "train.*" in message


def test_a_choice_that_fails_the_train_schema_names_key_and_value() -> None:
    message = error_of(with_sweep(space={"train.model.dropout": {"choices": [0.1, 1.5]}}))
    assert "sweep.space['train.model.dropout']: value 1.5" in message and "train.model.dropout" in message
    assert "value 0.1" not in message


def test_a_range_bound_and_a_misspelt_train_key_are_checked_too() -> None:
    message = error_of(
        with_sweep(space={"train.epochs": {"low": 0, "high": 8}, "train.optimizer.lrr": {"choices": [0.1]}})
    )
    assert "sweep.space['train.epochs']: value 0" in message
    assert "sweep.space['train.optimizer.lrr']" in message and "unknown key" in message


def test_grid_needs_choices_or_steps_for_every_key() -> None:
    message = error_of(with_sweep(sampler="grid"))  # the committed space has a log range for lr
    assert "train.optimizer.lr" in message and "grid" in message
    stepped = with_sweep(sampler="grid", space={"train.epochs": {"low": 4, "high": 12, "step": 4}})
    assert parse_project_params(stepped).sweep.sampler == "grid"


def test_dimension_shapes() -> None:
    with pytest.raises(ValueError, match="either `choices` or a range"):
        SweepParams.model_validate({"space": {"train.epochs": {"choices": [4], "low": 1, "high": 2}}})
    with pytest.raises(ValueError, match="cannot be combined"):
        SweepParams.model_validate(
            {"space": {"train.optimizer.lr": {"low": 0.1, "high": 1.0, "log": True, "step": 0.1}}}
        )
    sweep = SweepParams.model_validate(
        {
            "space": {
                "train.epochs": {"low": 4, "high": 12, "step": 4},
                "train.model.channels": {"choices": [[8], [8, 16]]},
            }
        }
    )
    assert space.grid_space(sweep) == {"train.epochs": [4, 8, 12], "train.model.channels": ["[8]", "[8, 16]"]}
    assert space.decode_params(sweep, {"train.model.channels": "[8, 16]", "train.epochs": 8}) == {
        "train.model.channels": [8, 16],
        "train.epochs": 8,
    }


def test_apply_changes_only_the_values_and_keeps_comments() -> None:
    values = {"train.optimizer.lr": 1e-06, "train.model.channels": [16, 32], "train.epochs": 8}
    edited = space.apply(TEXT, values)
    changed = [(a, b) for a, b in zip(TEXT.splitlines(), edited.splitlines(), strict=True) if a != b]
    assert len(changed) == 3
    for old, new in changed:  # the comment after each value stays, at its column
        assert old.split("#", 1)[1] == new.split("#", 1)[1] and old.index("#") == new.index("#")
    train = parse_params(yaml.safe_load(edited)).train  # as a stage reads it (PyYAML)
    assert (train.optimizer.lr, train.model.channels, train.epochs) == (1e-06, [16, 32], 8)


@pytest.mark.parametrize("value", [1e-06, 2.5e-10, 1e20, 0.003, 3.0])
def test_floats_are_written_as_yaml_1_1_floats(value: float) -> None:
    """ruamel writes 1e-06, which PyYAML (YAML 1.1) reads as the string '1e-06': a trial with a
    small learning rate then failed in train's params check instead of training."""
    read = yaml.safe_load(space.apply(TEXT, {"train.optimizer.lr": value}))["train"]["optimizer"]["lr"]
    assert isinstance(read, float) and read == value


def test_a_value_is_written_where_the_chosen_familys_override_would_otherwise_win():
    """The transformer's family override sets train.optimizer.lr: a trial's lr goes there, so the
    swept value is the one in effect (and the shared key, which the other families use, is untouched)."""
    text = (ROOT / "params.yaml").read_text().replace("    arch: cnn ", "    arch: transformer ", 1)
    raw = yaml.safe_load(text)
    assert "lr" in raw["train"]["families"]["transformer"]["optimizer"]
    written = yaml.safe_load(space.apply(text, {"train.optimizer.lr": 0.0123}))
    assert written["train"]["families"]["transformer"]["optimizer"]["lr"] == 0.0123
    assert written["train"]["optimizer"]["lr"] == raw["train"]["optimizer"]["lr"]
    assert parse_params(written).train.optimizer.lr == 0.0123

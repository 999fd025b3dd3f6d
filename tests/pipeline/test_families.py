"""`train.families`: a family's partial override of the train section, merged when params load;
a mistake inside one is named by its full key, whichever family is chosen."""

from __future__ import annotations

import copy
from typing import get_args

import pytest
import yaml

from pipeline.families import ARCHES
from pipeline.params import Arch, ParamsError, effective_key, parse_params


@pytest.fixture
def raw(project_root):
    return yaml.safe_load((project_root / "params.yaml").read_text())


def with_families(raw: dict, arch: str, families: dict) -> dict:
    raw = copy.deepcopy(raw)
    raw["train"]["model"]["arch"] = arch
    raw["train"]["families"] = families
    return raw


FAMILIES = {
    "mlp": {"epochs": 7, "model": {"hidden": [256, 128]}},
    "transformer": {"optimizer": {"lr": 0.001}, "model": {"transformer": {"depth": 3}}},
}


def test_the_chosen_familys_override_wins_and_the_rest_stays_shared(raw):
    shared = parse_params(with_families(raw, "transformer", {})).train
    train = parse_params(with_families(raw, "transformer", FAMILIES)).train
    assert (train.optimizer.lr, train.model.transformer.depth) == (0.001, 3)
    # merged key by key: the override's siblings keep their shared values
    assert train.optimizer.model_dump() == {**shared.optimizer.model_dump(), "lr": 0.001}
    assert train.model.transformer.model_dump() == {**shared.model.transformer.model_dump(), "depth": 3}
    # mlp's override does not leak into the transformer
    assert (train.epochs, train.model.hidden) == (shared.epochs, shared.model.hidden)


def test_a_list_in_an_override_replaces_the_shared_one(raw):
    train = parse_params(with_families(raw, "mlp", FAMILIES)).train
    assert (train.epochs, train.model.hidden, train.model.arch) == (7, [256, 128], "mlp")
    assert train.optimizer.lr == raw["train"]["optimizer"]["lr"]  # the transformer's lr stays its own


def test_a_family_without_an_override_gets_the_shared_keys(raw):
    chosen, alone = (parse_params(with_families(raw, "cnn", f)).train for f in (FAMILIES, {}))
    assert chosen.model_dump() == alone.model_dump()


def test_the_model_file_records_the_effective_params_only(raw):
    train = parse_params(with_families(raw, "mlp", FAMILIES)).train
    dumped = train.model_dump(mode="json")
    assert "families" not in dumped and dumped["epochs"] == 7
    assert train.families == FAMILIES  # still readable as written


@pytest.mark.parametrize(
    ("arch", "families", "named"),
    [
        # a mistake in a family that is not chosen fails the load too
        ("cnn", {"mlp": {"optimizr": {"lr": 0.1}}}, r"train\.families\.mlp\.optimizr: unknown key"),
        ("mlp", {"mlp": {"optimizer": {"lr": -1}}}, r"train\.families\.mlp\.optimizer\.lr: Input should be greater"),
        ("cnn", {"rnn": {"model": {"rnn": {"cell": "elman"}}}}, r"train\.families\.rnn\.model\.rnn\.cell"),
        (
            "cnn",
            {"transformer": {"model": {"transformer": {"heads": 5}}}},
            r"train\.families\.transformer\.model\.transformer: dim 64 must be a multiple of heads 5 \(got \{'heads': 5\}\)",
        ),
        ("cnn", {"mlp": {"model": {"arch": "rnn"}}}, r"train\.families\.mlp\.model\.arch: train\.model\.arch picks"),
        ("cnn", {"mlp": {"families": {"rnn": {}}}}, r"train\.families\.mlp\.families: overrides do not nest"),
        ("cnn", {"resnet": {"epochs": 3}}, r"train\.families\.resnet: not a model family; use one of cnn, mlp"),
        ("cnn", {"mlp": [1]}, r"train\.families\.mlp: an override is a mapping of train keys"),
    ],
)
def test_a_bad_override_is_refused_naming_its_full_key(raw, arch, families, named):
    with pytest.raises(ParamsError, match=named):
        parse_params(with_families(raw, arch, families))


def test_a_shared_mistake_is_named_once_under_train(raw):
    broken = with_families(raw, "mlp", FAMILIES)
    broken["train"]["epochs"] = 0
    with pytest.raises(ParamsError) as error:
        parse_params(broken)
    assert "train.epochs: Input should be greater than 0" in str(error.value)
    assert "families" not in str(error.value) and "1 invalid parameter" in str(error.value)


def test_the_families_are_the_archs():
    assert get_args(Arch) == ARCHES


def test_effective_key_points_at_the_override_that_sets_a_value(raw):
    raw = with_families(raw, "transformer", FAMILIES)
    assert effective_key(raw, "train.optimizer.lr") == "train.families.transformer.optimizer.lr"
    assert effective_key(raw, "train.model.transformer.depth") == "train.families.transformer.model.transformer.depth"
    assert effective_key(raw, "train.optimizer") == "train.families.transformer.optimizer"
    # keys the override leaves shared, mlp's keys, and keys outside train stay themselves
    for key in ("train.optimizer.weight_decay", "train.epochs", "train.model.hidden", "split.seed", "train"):
        assert effective_key(raw, key) == key
    assert effective_key(with_families(raw, "mlp", FAMILIES), "train.epochs") == "train.families.mlp.epochs"
    assert effective_key(with_families(raw, "cnn", FAMILIES), "train.epochs") == "train.epochs"


def test_a_value_written_at_the_effective_key_is_the_one_in_effect(raw):
    """What a sweep does with it: write a trial's value where it takes effect."""
    raw = with_families(raw, "transformer", FAMILIES)
    for key, value in (("train.optimizer.lr", 0.0042), ("train.optimizer.weight_decay", 0.02)):
        node = raw
        *parents, last = effective_key(raw, key).split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    train = parse_params(raw).train
    assert (train.optimizer.lr, train.optimizer.weight_decay) == (0.0042, 0.02)

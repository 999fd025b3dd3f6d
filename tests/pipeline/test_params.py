"""params.yaml loads into typed objects; every mistake names its key."""

from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import ValidationError

from pipeline.params import ParamsError, load_params, parse_params


@pytest.fixture
def raw(project_root):
    return yaml.safe_load((project_root / "params.yaml").read_text())


def test_committed_params_load(params):
    assert params.data.n_features == 64
    with pytest.raises(ValidationError, match="frozen"):
        params.split.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("clean", "max_quarantine_sharee"), 0.1, "clean.max_quarantine_sharee: unknown key"),
        (("split", "seed"), "forty-two", "split.seed"),
        (("split", "test_fraction"), 1.5, "split.test_fraction"),
        (("split", "folds"), [0, 2], "split"),
        (("data", "image_shape"), [8], "data"),
        (("embed", "as_of"), "yesterday", "embed"),
        (("bogus",), {}, "bogus: unknown key"),
    ],
)
def test_bad_value_names_the_key(raw, path, value, named):
    broken = copy.deepcopy(raw)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ParamsError) as error:
        parse_params(broken, "params.yaml")
    assert named in str(error.value)


def test_cnn_without_image_shape_is_rejected(raw):
    raw["data"]["image_shape"] = None
    with pytest.raises(ParamsError, match="needs data.image_shape"):
        parse_params(raw)


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)

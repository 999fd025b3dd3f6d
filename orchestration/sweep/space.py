"""The search space as Optuna sees it, and the way a trial's values get into params.yaml.

Optuna's categorical choices must be None, bools, numbers or strings; a choice that is a list or a
mapping (`train.model.channels: {choices: [[16, 32], [32, 64]]}`) goes to Optuna as its JSON text
and comes back decoded, so the study's trials stay readable in Optuna's own tools too.

`apply` writes values into params.yaml text with ruamel.yaml's round trip: every comment, the flow
style of lists and the alignment of the comments after values survive (only the values change).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from orchestration.sweep.params import Dimension, SweepParams
from pipeline.params import effective_key

PRIMITIVES = (type(None), bool, int, float, str)


def encode(value: Any) -> Any:
    """A choice as Optuna stores it: primitives as they are, lists and mappings as JSON text."""
    return value if isinstance(value, PRIMITIVES) else json.dumps(value, sort_keys=True)


def decode(dim: Dimension, stored: Any) -> Any:
    """The YAML value of a stored choice (the inverse of `encode`); a range's value as it is."""
    if dim.choices is None:
        return stored
    for choice in dim.choices:
        if encode(choice) == stored:
            return choice
    raise ValueError(f"{stored!r} is none of the choices {dim.choices}")


def distribution(dim: Dimension) -> BaseDistribution:
    if dim.choices is not None:
        return CategoricalDistribution([encode(choice) for choice in dim.choices])
    assert dim.low is not None and dim.high is not None  # the schema checks it
    if dim.is_int:
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log, step=int(dim.step or 1))
    return FloatDistribution(float(dim.low), float(dim.high), log=dim.log, step=dim.step)


def distributions(sweep: SweepParams) -> dict[str, BaseDistribution]:
    return {key: distribution(dim) for key, dim in sweep.space.items()}


def grid_values(dim: Dimension) -> list[Any]:
    """Every value the grid sampler tries for a dimension (as Optuna stores it)."""
    dist = distribution(dim)
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    assert dim.low is not None and dim.high is not None and dim.step is not None
    count = int(round((dim.high - dim.low) / dim.step)) + 1
    values = [dim.low + i * dim.step for i in range(count) if dim.low + i * dim.step <= dim.high + 1e-12]
    return [int(v) for v in values] if dim.is_int else [round(float(v), 12) for v in values]


def grid_space(sweep: SweepParams) -> dict[str, list[Any]]:
    return {key: grid_values(dim) for key, dim in sweep.space.items()}


def grid_size(sweep: SweepParams) -> int:
    size = 1
    for values in grid_space(sweep).values():
        size *= len(values)
    return size


def decode_params(sweep: SweepParams, stored: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's params as params.yaml values, keyed by the dotted train.* keys."""
    return {key: decode(sweep.space[key], value) for key, value in stored.items() if key in sweep.space}


def params_key(raw: Any, key: str) -> str:
    """The params.yaml key a sweep value is written to. Every write goes through here, so a key
    whose value comes from somewhere else is routed in one place: the chosen model family's
    override (`train.families.<arch>`) when it sets the key, else the key itself."""
    return effective_key(raw, key)


def _set(tree: Any, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        if part not in node or node[part] is None:
            node[part] = CommentedMap()
        node = node[part]
    if isinstance(value, list):  # lists stay on one line, as params.yaml writes them
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()
        value = seq
    node[leaf] = value


def _float_text(value: float) -> str:
    """A float as YAML 1.1 readers (PyYAML, which the stages use) read back as a float: Python's
    shortest form, with the `.` that PyYAML needs before an exponent (`1e-06` is a string to it)."""
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    mantissa, exp = text.split("e") if "e" in text else (text, None)
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa if exp is None else f"{mantissa}e{exp}"


def _yaml() -> YAML:
    rt = YAML()  # round trip
    rt.preserve_quotes = True
    rt.width = 4096  # never fold a long comment or value
    # params.yaml spells "no value" `null`; ruamel's default is an empty value
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    rt.representer.add_representer(float, lambda r, v: r.represent_scalar("tag:yaml.org,2002:float", _float_text(v)))
    return rt


def apply(params_text: str, values: Mapping[str, Any]) -> str:
    """params.yaml text with `values` (dotted keys -> values) written in; comments kept."""
    if not values:
        return params_text
    rt = _yaml()
    tree = rt.load(params_text)
    for key, value in values.items():
        _set(tree, params_key(tree, key), value)
    out = io.StringIO()
    rt.dump(tree, out)
    return out.getvalue()

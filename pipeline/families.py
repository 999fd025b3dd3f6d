"""Per-family training defaults: `train.families.<arch>` is a partial override of the `train`
section, merged over the shared keys when `train.model.arch` picks that family.

The merge happens once, while params load (TrainParams' validator calls `resolve_family`), so
every reader of `params.train` sees the effective params of the chosen family and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

ARCHES = ("cnn", "mlp", "rnn", "transformer")  # train.model.arch's values (pipeline.params.Arch)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` on top: mappings merge key by key, any other value (a list too)
    replaces the one below."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        merged[key] = merge(below, value) if isinstance(value, Mapping) and isinstance(below, Mapping) else value
    return merged


def chosen_arch(train: Mapping[str, Any]) -> Any:
    """`model.arch` of a raw train section (the schema's default when unset)."""
    model = train.get("model")
    return model.get("arch", "cnn") if isinstance(model, Mapping) else "cnn"


def resolve_family(train: dict[str, Any], schema: type[BaseModel]) -> dict[str, Any]:
    """The raw train section with the chosen family's override merged over the shared keys, and
    `families` kept as written. Every family's override is checked, merged and validated as
    `schema`, so a misspelt key fails the load whichever family is chosen; it is named
    `families.<arch>.<key>` (under `train.`)."""
    families = train.get("families")
    if not isinstance(families, dict) or not families:
        return train
    shared = {key: value for key, value in train.items() if key != "families"}
    # The shared keys stand on their own (they are every other family's): a mistake there is
    # named as `train.<key>` even where the chosen family's override hides it.
    shared_errors = _errors(shared, schema)
    errors = [_detail(item, item["loc"], item["input"]) for item in shared_errors]
    known = {(item["loc"], item["type"]) for item in shared_errors}
    merged: dict[Any, dict[str, Any]] = {}
    for arch, override in families.items():
        loc = ("families", arch)
        if arch not in ARCHES:
            errors.append(_error(loc, f"not a model family; use one of {', '.join(ARCHES)}", override))
            continue
        if not isinstance(override, dict):
            errors.append(_error(loc, "an override is a mapping of train keys (see params.yaml)", override))
            continue
        refused = _refused_keys(override, loc)
        if refused:
            errors += refused
            continue
        merged[arch] = merge(shared, override)
        errors += _override_errors(override, merged[arch], loc, schema, known)
    if errors:
        raise ValidationError.from_exception_data(schema.__name__, errors)
    return merged.get(chosen_arch(shared), shared) | {"families": families}


def _error(loc: tuple[Any, ...], message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("family_override", message), loc=loc, input=value)


def _refused_keys(override: dict[str, Any], loc: tuple[str, ...]) -> list[InitErrorDetails]:
    errors = []
    if "families" in override:
        errors.append(_error((*loc, "families"), "overrides do not nest; remove it", override["families"]))
    model = override.get("model")
    if isinstance(model, dict) and "arch" in model:
        message = "train.model.arch picks the family; its override cannot change it: remove it"
        errors.append(_error((*loc, "model", "arch"), message, model["arch"]))
    return errors


def _errors(raw: dict[str, Any], schema: type[BaseModel]) -> list[Any]:
    try:
        schema.model_validate(raw)
        return []
    except ValidationError as error:
        return error.errors()


def _detail(item: Any, loc: tuple[Any, ...], written: Any) -> InitErrorDetails:
    """A pydantic error again at `loc`; a model validator's check keeps its message as it is."""
    if item["type"] == "value_error":
        return _error(loc, item["msg"].removeprefix("Value error, "), written)
    return InitErrorDetails(type=item["type"], loc=loc, input=item["input"], ctx=item.get("ctx", {}))


def _override_errors(
    override: dict[str, Any],
    merged: dict[str, Any],
    loc: tuple[str, ...],
    schema: type[BaseModel],
    known: set[tuple[Any, ...]],
) -> list[InitErrorDetails]:
    """The errors of `merged` that the shared keys alone do not have (`known`: reported once, as
    `train.<key>`), located under the family's override with what it wrote there."""
    return [
        _detail(item, (*loc, *item["loc"]), _written(override, item["loc"]))
        for item in _errors(merged, schema)
        if (item["loc"], item["type"]) not in known
    ]


def _written(override: dict[str, Any], loc: tuple[Any, ...]) -> Any:
    """What the override wrote at `loc`, or at the nearest level above it."""
    node: Any = override
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            break
        node = node[part]
    return node


def effective_key(raw_params: Mapping[str, Any], key: str) -> str:
    """The dotted key whose value is in effect for `key` (e.g. `train.optimizer.lr`) in the raw
    params.yaml mapping: `train.families.<arch>.optimizer.lr` when the chosen family's override
    sets it, else `key` itself (so also for a key outside `train.`). Whatever writes a value into
    params.yaml for a run (a sweep's trial) writes it there, so no override silently wins."""
    head, _, rest = key.partition(".")
    train = raw_params.get("train")
    if head != "train" or not rest or not isinstance(train, Mapping):
        return key
    arch = chosen_arch(train)
    node: Any = (train.get("families") or {}).get(arch)
    for part in rest.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return key
        node = node[part]
    return f"train.families.{arch}.{rest}"

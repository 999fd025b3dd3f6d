"""The stage graph of a `dvc.yaml`, read with PyYAML alone so that a DAG file can build its tasks
from it at parse time without importing DVC.

It understands what this project's pipeline uses and fails loudly on anything else: `${...}`
interpolation from `params.yaml` and top-level `vars`, and `foreach` / `matrix` stages, expanded
into `stage@key` names exactly as DVC names them. A stage depends on another when one of its deps
is, contains or lies inside one of the other's outs (metrics and plots included).
`tests/dags/test_dvc_graph.py` checks the result against DVC's own graph.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.params import read_yaml

JOIN = "@"  # DVC's separator between a foreach/matrix group and its item key
_EXPR = re.compile(r"\$\{\s*([^}]*?)\s*\}")


class DvcGraphError(ValueError):
    """dvc.yaml uses something this reader does not understand, or is inconsistent."""


@dataclass(frozen=True)
class Stage:
    name: str  # DVC's stage name: `train`, `crossval@0`
    group: str  # the stage's key in dvc.yaml: `crossval` for `crossval@0`, else the name itself
    key: str | None  # the foreach/matrix key (`0`), None for a plain stage
    cmd: str
    desc: str = ""
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()  # outs, metrics and plots: every path the stage writes
    meta: Mapping[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = ()  # the params.yaml keys it reads (`train`, `split.folds`); other params files left out

    def reads_params(self, section: str) -> bool:
        """Whether a change under `section` (a params.yaml key, dotted or not) can change this stage."""
        return any(
            key == section or key.startswith(section + ".") or section.startswith(key + ".") for key in self.params
        )

    def cli_args(self) -> dict[str, str]:
        """`--flag value` pairs of the command, so a path declared here is never re-typed elsewhere."""
        words = shlex.split(self.cmd)
        return {
            word[2:]: words[i + 1]
            for i, word in enumerate(words[:-1])
            if word.startswith("--") and not words[i + 1].startswith("--")
        }


@dataclass(frozen=True)
class StageGraph:
    stages: Mapping[str, Stage]  # in dvc.yaml order
    upstream: Mapping[str, frozenset[str]]  # stage name -> the stages it directly depends on

    @property
    def edges(self) -> set[tuple[str, str]]:
        return {(up, name) for name, ups in self.upstream.items() for up in ups}

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.upstream[name])
        while todo:
            up = todo.pop()
            if up not in seen:
                seen.add(up)
                todo.extend(self.upstream[up])
        return seen

    def reduced_upstream(self, name: str) -> frozenset[str]:
        """Direct upstream stages minus those already implied through another (transitive
        reduction): `train` needs `clean` and `split`, but `split` already comes after `clean`."""
        ups = self.upstream[name]
        implied = set().union(*(self.ancestors(up) for up in ups)) if ups else set()
        return frozenset(ups - implied)

    def roots(self) -> list[str]:
        return [name for name in self.stages if not self.upstream[name]]

    def leaves(self) -> list[str]:
        used = {up for ups in self.upstream.values() for up in ups}
        return [name for name in self.stages if name not in used]

    def groups(self) -> dict[str, list[str]]:
        """foreach/matrix groups: `crossval` -> [`crossval@0`, ...]."""
        out: dict[str, list[str]] = {}
        for stage in self.stages.values():
            if stage.key is not None:
                out.setdefault(stage.group, []).append(stage.name)
        return out


def _lookup(context: Mapping[str, Any], expr: str, where: str) -> Any:
    node: Any = context
    for part in re.split(r"\.|\[(\d+)\]", expr):
        if not part:
            continue
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise DvcGraphError(f"{where}: cannot resolve ${{{expr}}} (no {part!r})")
    return node


def _to_str(value: Any) -> str:
    # DVC writes booleans as YAML does.
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _interpolate(value: Any, context: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        whole = _EXPR.fullmatch(value)
        if whole:  # `${split.folds}` alone keeps its type (a list for foreach)
            return _lookup(context, whole.group(1), where)
        return _EXPR.sub(lambda m: _to_str(_lookup(context, m.group(1), where)), value)
    if isinstance(value, list):
        return [_interpolate(v, context, where) for v in value]
    if isinstance(value, dict):
        # Keys too: an out with options is `{path: options}`, and its path may hold `${item}`.
        return {_interpolate(k, context, where): _interpolate(v, context, where) for k, v in value.items()}
    return value


def _paths(entries: Any) -> list[str]:
    """Paths of a deps/outs/metrics/plots list, whose items are strings or {path: options}."""
    paths: list[str] = []
    for entry in entries or []:
        if isinstance(entry, str):
            paths.append(entry)
        elif isinstance(entry, dict):
            paths.extend(str(k) for k in entry)
        else:
            raise DvcGraphError(f"unexpected entry {entry!r}")
    return paths


def _normalise(path: str) -> str:
    return str(PurePosixPath(path.rstrip("/")))


def _items(group: str, body: Mapping[str, Any], context: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(key, extra context) of each generated stage, named the way DVC names them."""
    if "foreach" in body:
        iterable = _interpolate(body["foreach"], context, f"{group}.foreach")
        if isinstance(iterable, Mapping):
            return [(_to_str(k), {"key": k, "item": v}) for k, v in iterable.items()]
        if not isinstance(iterable, list):
            raise DvcGraphError(f"{group}.foreach: expected a list or a mapping, got {iterable!r}")
        if any(isinstance(v, (list, dict)) for v in iterable):
            return [(str(i), {"item": v}) for i, v in enumerate(iterable)]
        return [(_to_str(v), {"item": v}) for v in iterable]
    matrix = _interpolate(body["matrix"], context, f"{group}.matrix")
    if not isinstance(matrix, Mapping):
        raise DvcGraphError(f"{group}.matrix: expected a mapping of lists")
    items = []
    for combination in itertools.product(*(list(enumerate(v)) for v in matrix.values())):
        values = dict(zip(matrix, (v for _, v in combination), strict=True))
        key = "-".join(
            f"{name}{i}" if isinstance(v, (list, dict)) else _to_str(v)
            for name, (i, v) in zip(matrix, combination, strict=True)
        )
        items.append((key, {"item": values}))
    return items


def _stage(name: str, group: str, key: str | None, body: Mapping[str, Any], context: Mapping[str, Any]) -> Stage:
    unknown = set(body) - {"cmd", "desc", "deps", "outs", "metrics", "plots", "params", "meta", "wdir", "frozen"}
    unknown -= {"always_changed", "vars"}
    if unknown:
        raise DvcGraphError(f"stage {name}: unsupported keys {sorted(unknown)}")
    if body.get("wdir", ".") != ".":
        raise DvcGraphError(f"stage {name}: wdir is not supported")
    resolved = _interpolate(dict(body), context, f"stage {name}")
    cmd = resolved.get("cmd", "")
    if isinstance(cmd, list):
        cmd = " && ".join(cmd)
    outs = [*_paths(resolved.get("outs")), *_paths(resolved.get("metrics")), *_paths(resolved.get("plots"))]
    return Stage(
        name=name,
        group=group,
        key=key,
        cmd=str(cmd),
        desc=str(resolved.get("desc", "")),
        deps=tuple(_normalise(p) for p in _paths(resolved.get("deps"))),
        outs=tuple(_normalise(p) for p in outs),
        meta=resolved.get("meta") or {},
        params=tuple(_param_keys(resolved.get("params"))),
    )


def _param_keys(params: Any) -> list[str]:
    """The params.yaml keys of a stage's `params:` (entries naming another file are left out)."""
    keys: list[str] = []
    for item in params or []:
        if isinstance(item, str):
            keys.append(item)
        elif isinstance(item, Mapping):
            for name, value in item.items():
                if str(name) == "params.yaml":
                    keys.extend(str(v) for v in value or [])
    return keys


def _context(root: Path, document: Mapping[str, Any]) -> dict[str, Any]:
    """What `${...}` can see: params.yaml (DVC's default vars) and the top-level `vars`."""
    context: dict[str, Any] = {}
    default = root / "params.yaml"
    if default.exists():
        context.update(read_yaml(default.read_text()) or {})
    for entry in document.get("vars") or []:
        if isinstance(entry, dict):
            context.update(entry)
            continue
        path, _, keys = str(entry).partition(":")
        loaded = read_yaml((root / path).read_text()) or {}
        context.update({k: loaded[k] for k in keys.split(",")} if keys else loaded)
    return context


def _overlaps(dep: str, out: str) -> bool:
    return dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")


def read_graph(root: str | Path = ".", dvc_yaml: str = "dvc.yaml") -> StageGraph:
    """Parse `<root>/dvc.yaml` into stages (foreach/matrix expanded) and their dependencies."""
    root = Path(root)
    document = read_yaml((root / dvc_yaml).read_text()) or {}
    context = _context(root, document)
    stages: dict[str, Stage] = {}
    for group, body in (document.get("stages") or {}).items():
        if JOIN in group:
            raise DvcGraphError(f"stage name {group!r} must not contain {JOIN!r}")
        if "foreach" in body or "matrix" in body:
            template = body.get("do", {k: v for k, v in body.items() if k != "matrix"})
            for key, extra in _items(group, body, context):
                name = f"{group}{JOIN}{key}"
                stages[name] = _stage(name, group, key, template, {**context, **extra})
        else:
            stages[group] = _stage(group, group, None, body, context)

    writers = {out: stage.name for stage in stages.values() for out in stage.outs}
    upstream = {
        stage.name: frozenset(
            writer
            for dep in stage.deps
            for out, writer in writers.items()
            if writer != stage.name and _overlaps(dep, out)
        )
        for stage in stages.values()
    }
    return StageGraph(stages=stages, upstream=upstream)

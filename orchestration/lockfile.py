"""One consistent `dvc.lock` per run, merged from the entries the stage tasks return.

Every stage task works in its own checkout and returns its stage's `dvc.lock` entry (small
metadata: hashes, params, command) through XCom. Downstream tasks and publish rebuild the run's
lock from those entries on top of the lock the run started from (the last published one), so
parallel tasks never write one shared file:

- entries are laid out in `dvc.yaml` order, whatever order the tasks finished in;
- a stage that returned several results (tries of a retried task) counts with its latest try;
- a stage that `dvc.yaml` no longer has (a fold that was dropped) is left out;
- every dep that another stage writes must carry the hash that stage's entry records; otherwise the
  entries come from different versions of the data, and the merge refuses to publish them.

Pure functions over plain dicts (what PyYAML reads from a `dvc.lock`), so they are cheap to test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import StageError
from pipeline.params import YAML_LOADER

SCHEMA = "2.0"  # the dvc.lock schema DVC 3 writes
# libyaml's emitter where PyYAML has it: 4x faster on a run's lock, the same text as the pure-Python one.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

Entry = dict[str, Any]


class _Loader(YAML_LOADER):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader, except that dates stay strings: entries travel as JSON (XCom)."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class LockMergeError(StageError):
    """The stage entries of a run do not fit together (missing or inconsistent)."""


def parse(text: str | None) -> dict[str, Entry]:
    """The `stages:` of a dvc.lock text ({} for no file or an empty one)."""
    if not text:
        return {}
    document = yaml.load(text, Loader=_Loader) or {}  # noqa: S506 - a safe loader
    if not isinstance(document, Mapping) or str(document.get("schema", SCHEMA)) != SCHEMA:
        raise LockMergeError(f"dvc.lock: expected a schema {SCHEMA} lock file from DVC 3")
    return {str(name): dict(entry) for name, entry in (document.get("stages") or {}).items()}


def read(root: Path) -> dict[str, Entry]:
    """The `stages:` of the checkout `root`'s dvc.lock ({} when it has none)."""
    path = root / "dvc.lock"
    return parse(path.read_text() if path.exists() else None)


def dump(stages: Mapping[str, Entry]) -> str:
    return yaml.dump({"schema": SCHEMA, "stages": dict(stages)}, Dumper=_DUMPER, sort_keys=False, width=100)


def latest_entries(results: Iterable[Mapping[str, Any]]) -> dict[str, Entry]:
    """Stage name -> lock entry from stage task results (`{"stage", "lock", "try_number"}`).

    Airflow keeps only the last try's value, but results may also be gathered from elsewhere (a
    log, a rerun); the highest try wins, and two results of the same try must agree."""
    best: dict[str, tuple[int, Entry]] = {}
    for result in results:
        if not result:
            continue  # a skipped or failed task returned nothing
        name = str(result["stage"])
        entry = (result.get("lock") or {}).get(name)
        if entry is None:
            raise LockMergeError(f"the result of stage {name} carries no dvc.lock entry for it")
        attempt = int(result.get("try_number") or 1)
        if name in best:
            seen, previous = best[name]
            if attempt == seen and previous != entry:
                raise LockMergeError(f"two results of try {attempt} of stage {name} disagree")
            if attempt < seen:
                continue
        best[name] = (attempt, dict(entry))
    return {name: entry for name, (_, entry) in best.items()}


def _hash(item: Mapping[str, Any]) -> str | None:
    value = item.get("md5") or item.get("etag") or item.get("checksum")
    return None if value is None else str(value)


def inconsistencies(stages: Mapping[str, Entry], among: Iterable[str] | None = None) -> list[str]:
    """Deps whose hash differs from what the stage that writes them recorded, looking only at
    stages in `among` (default: all) as readers and writers."""
    names = set(stages) if among is None else set(among) & set(stages)
    writers: dict[str, tuple[str, str | None]] = {}
    for name in names:
        for out in stages[name].get("outs") or []:
            writers[str(out["path"])] = (name, _hash(out))
    problems = []
    for name in [n for n in stages if n in names]:
        for dep in stages[name].get("deps") or []:
            path = str(dep["path"])
            if path not in writers:
                continue
            writer, written = writers[path]
            used = _hash(dep)
            if writer != name and used != written:
                problems.append(f"{name} used {path} with hash {used}, but {writer} recorded {written}")
    return problems


def merge(base: Mapping[str, Entry], entries: Mapping[str, Entry], order: Sequence[str]) -> dict[str, Entry]:
    """`entries` (this run's stage results) over `base` (the lock the run started from), in
    `order` (dvc.yaml's), without the stages `order` does not name."""
    unknown = sorted(set(entries) - set(order))
    if unknown:
        raise LockMergeError(f"results for stages that dvc.yaml does not have: {unknown}")
    return {name: dict(entries.get(name) or base[name]) for name in order if name in entries or name in base}


def verify(stages: Mapping[str, Entry], require: Iterable[str] = (), among: Iterable[str] | None = None) -> None:
    """Raise unless every stage in `require` has an entry and the entries of `among` (default:
    all) fit together: each dep written by another stage carries the hash that stage recorded."""
    missing = [name for name in require if name not in stages]
    if missing:
        raise LockMergeError(
            f"no dvc.lock entry for {missing}: their tasks returned nothing and no earlier run has one"
        )
    problems = inconsistencies(stages, among)
    if problems:
        raise LockMergeError(
            "the stage entries of this run come from different versions of the data: "
            + "; ".join(problems)
            + ". A task probably ran against outputs that a retry replaced; clear the listed stages and rerun them."
        )

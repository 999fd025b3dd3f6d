"""dvc.yaml declares what each stage really uses, so that DVC reruns exactly what a change affects.

- Code: every project module a stage's command imports (transitively, lazy imports included) is
  one of its deps, and every Python dep is code it runs (or a file it copies).
- Params: every params key a stage reads is one of its `params`. Each stage's CLI runs for real, in
  order, on a tiny copy of the pipeline, with its params wrapped so that every key it reads is
  recorded; a key outside its dvc.yaml entry fails the test.

The stages, their commands, deps and params come from DVC's own reading of dvc.yaml.
"""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from project_imports import ROOT, project_imports
from pydantic import BaseModel

# Python files a stage copies as data rather than imports (so a change to them must rerun it).
COPIED = {"export": {"serving/backend/model.py"}}


@dataclass(frozen=True)
class DvcStage:
    name: str  # `crossval@0`
    group: str  # `crossval`
    module: str  # `stages.crossval`
    args: list[str]  # the command's arguments after `python -m <module>`
    deps: set[str]
    params: set[str]  # keys of params.yaml; a section name covers all of its keys


def dvc_stages() -> list[DvcStage]:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = []
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            words = shlex.split(stage.cmd)
            assert words[:2] == ["python", "-m"], f"{stage.addressing}: command is not `python -m <module>`"
            params = {key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params}
            deps = {str(dep.def_path) for dep in stage.deps if not isinstance(dep, ParamsDependency)}
            name = stage.addressing
            stages.append(DvcStage(name, name.split("@")[0], words[2], words[3:], deps, params))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[DvcStage]:
    return dvc_stages()


def _covered(path: str, deps: set[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_module_a_stage_imports_is_a_dep(stages):
    missing = {}
    for stage in stages:
        code = {str(p.relative_to(ROOT)) for p in project_imports(stage.module)}
        if absent := sorted(p for p in code if not _covered(p, stage.deps)):
            missing[stage.name] = absent
    assert missing == {}, f"add these to the stages' deps in dvc.yaml: {missing}"


def test_a_code_folder_dep_hashes_its_sources_not_the_bytecode_cache(stages):
    """A folder of modules is a dep (pipeline/models, pipeline/validation); Python writes its
    `__pycache__` there on import. Hashed, the lock would change with whoever last imported the code
    and with the interpreter's version: DVC must ignore it (asked of the real DVC CLI)."""
    folders = sorted(
        {d for stage in stages for d in stage.deps if (ROOT / d).is_dir() and any((ROOT / d).glob("*.py"))}
    )
    assert folders, "no folder of modules among the deps: is the reading of dvc.yaml broken?"
    caches = [f"{folder}/__pycache__/module.cpython-311.pyc" for folder in folders]
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "check-ignore", "--non-matching", "--details", *caches],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    not_ignored = [line.split()[-1] for line in done.stdout.splitlines() if line.startswith("::")]
    assert not_ignored == [], f"DVC hashes these bytecode caches in code deps; ignore them in .dvcignore: {not_ignored}"


def test_every_code_dep_is_code_the_stage_runs(stages):
    unused = {}
    for stage in stages:
        code = {str(p.relative_to(ROOT)) for p in project_imports(stage.module)} | COPIED.get(stage.group, set())
        if extra := sorted(d for d in stage.deps if d.endswith(".py") and d not in code):
            unused[stage.name] = extra
    assert unused == {}, f"these deps are code the stage does not run; remove them from dvc.yaml: {unused}"


# --- params ------------------------------------------------------------------------------------


class Recorded:
    """A params section that records the dotted key of every field read through it. A sub-section
    is recorded field by field; anything else taken from a section (a dump, a property) counts as
    reading the whole section."""

    def __init__(self, section: BaseModel, path: str, reads: set[str]) -> None:
        object.__setattr__(self, "_section", section)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_reads", reads)

    def __getattr__(self, name: str) -> Any:
        section, path, reads = self._section, self._path, self._reads
        value = getattr(section, name)
        key = f"{path}.{name}" if path else name
        if name in type(section).model_fields:
            if isinstance(value, BaseModel):
                return Recorded(value, key, reads)
            reads.add(key)
        else:
            reads.add(path or "*")  # e.g. model_dump(), or a property computed from several keys
        return value


def _declared(key: str, params: set[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in params)


def tiny_params(target: Path, variant: str = "defaults") -> Path:
    """The project's params with a pipeline small enough to run every stage in seconds; `variant`
    turns on the branches the defaults leave off (each reads keys of its own)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["embed"]["batches"] = 1
    raw["split"]["folds"] = [0, 1]
    raw["train"] |= {"epochs": 1, "device": "cpu"}
    raw["train"]["model"] |= {"channels": [4], "hidden": [8]}
    raw["train"]["families"] = {}  # the sizes above whichever family a variant picks
    if variant == "switched_on":  # differential privacy, the novelty output, the explanations
        raw["train"]["privacy"]["enabled"] = True
        raw["novelty"] |= {"enabled": True, "epochs": 1}
        raw["explain"] |= {"enabled": True, "n_steps": 2, "rows_per_class": 1, "max_rows": 20}
    elif variant == "mixed_table":  # a user's CSV: text label and columns, gaps, per-column overrides
        from mixed_data import data_section, mixed_table

        mixed_table(n=240).to_csv(target / "penguins.csv", index=False)
        columns = {"island": {"categories": ["Biscoe", "Dream", "Torgersen"]}, "sex": {"missing": "impute"}}
        raw["data"] = data_section("indicator", columns, source=str(target / "penguins.csv"))
        raw["train"]["model"]["arch"] = "mlp"
        raw["explain"] |= {"enabled": True, "n_steps": 2, "max_rows": 20}
    path = target / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["defaults", "switched_on", "mixed_table"])
def test_every_params_key_a_stage_reads_is_declared(stages, variant, tmp_path, monkeypatch):
    from pipeline.params import load_params
    from stages import _cli

    params_file = tiny_params(tmp_path, variant)
    folds = [str(f) for f in load_params(params_file).split.folds]
    monkeypatch.chdir(tmp_path)
    reads: set[str] = set()
    monkeypatch.setattr(_cli, "load_params", lambda path: Recorded(load_params(path), "", reads))
    undeclared, ran = {}, []
    for stage in stages:  # in dvc.yaml order, so each stage finds its inputs
        if "@" in stage.name and stage.name.split("@")[1] not in folds:
            continue
        reads.clear()
        monkeypatch.setattr(sys, "argv", [stage.module, *stage.args, "--params", str(params_file)])
        importlib.import_module(stage.module).main()
        ran.append(stage.name)
        assert reads, f"{stage.name} read no params at all: is the recording broken?"
        if bad := sorted(key for key in reads if not _declared(key, stage.params)):
            undeclared[stage.name] = bad
    assert {s.split("@")[0] for s in ran} == {s.group for s in stages}
    assert undeclared == {}, f"stages read params keys their dvc.yaml entry does not list: {undeclared}"


def test_the_recorder_catches_an_undeclared_read(params):
    """The check above can fail: reading a key outside the declared ones is reported."""
    reads: set[str] = set()
    recorded = Recorded(params, "", reads)
    assert recorded.data.label == params.data.label
    assert recorded.train.optimizer.lr == params.train.optimizer.lr
    recorded.export.model_dump()
    assert reads == {"data.label", "train.optimizer.lr", "export"}
    assert [k for k in sorted(reads) if not _declared(k, {"data", "export"})] == ["train.optimizer.lr"]

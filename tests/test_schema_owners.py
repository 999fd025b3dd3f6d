"""Each params schema lives with its owner, and a DVC stage depends only on the schemas it reads:
editing the Airflow, serving or gate schema reruns no stage, editing the pipeline's reruns them all.

DVC itself says so: `dvc status` on a copy of the project with the committed dvc.lock, before and
after the edit (the copy has no data, so every stage is out of date for that reason alike; what
counts is which code deps the edit adds)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, copy_project

pytestmark = pytest.mark.integration  # the real DVC CLI

OTHER_SCHEMAS = ("AirflowParams", "ServingParams", "RolloutParams", "GateParams", "SweepParams")
PACKAGES = ("pipeline", "stages", "serving", "orchestration")


def dvc(project: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def changed_deps(project: Path) -> set[tuple[str, str]]:
    """(stage, dep) for every dep `dvc status` reports changed."""
    status = json.loads(dvc(project, "status", "--json"))
    return {
        (stage, dep)
        for stage, changes in status.items()
        for change in changes
        if isinstance(change, dict)
        for dep in change.get("changed deps", {})
    }


def schema_file(project: Path, name: str) -> Path:
    """The module that defines the params schema class `name`."""
    (found,) = [
        path
        for package in PACKAGES
        for path in (project / package).rglob("*.py")
        if f"\nclass {name}(" in path.read_text()
    ]
    return found


def edit_schema(project: Path, name: str) -> None:
    """A change to the schema `name`: one more commented line in its class."""
    path = schema_file(project, name)
    path.write_text(path.read_text().replace(f"\nclass {name}(", f"\n# edited\nclass {name}(", 1))


def test_editing_another_owners_schema_reruns_no_stage(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    shutil.copyfile(ROOT / "dvc.lock", project / "dvc.lock")
    stages = set(dvc(project, "stage", "list", "--name-only").split())
    before = changed_deps(project)
    for name in OTHER_SCHEMAS:
        edit_schema(project, name)
    # No stage depends on the file of any of them, but tune: it starts a scratch Triton with the
    # server's own code (serving/server.py), which takes its settings' types from serving/params.py.
    assert changed_deps(project) - before == {("tune", "serving/params.py")}

    edit_schema(project, "DataParams")  # the pipeline's schema: every stage reads it
    assert {stage for stage, dep in changed_deps(project) if dep == "pipeline/params.py"} == stages

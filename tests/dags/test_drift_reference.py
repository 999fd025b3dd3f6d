"""The drift reference across runs (orchestration/drift_reference.py, the publish hook): publish
makes the run's data profile the next run's reference, in a commit after the version's tag; prepare
keeps it; a rollback to version N makes N's profile the reference again. On the toy DVC project with a drift-like stage, as workers sharing only the remotes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support import GIT_ENV, ROOT

from orchestration import steps
from orchestration.drift_reference import DriftPaths, DriftStageError, drift_paths
from orchestration.dvc_graph import read_graph
from orchestration.workspace import dvc_command, sync

# A drift stage of the toy: its "profile" is the data itself; its metrics name the reference's tag.
TOY_DRIFT_STAGE = """
  drift:
    cmd: python drift.py --data data.txt --reference reference.json --profile profile.json --metrics drift.json
    deps:
      - data.txt
      - reference.json
      - drift.py
    outs:
      - profile.json
    metrics:
      - drift.json
"""
TOY_DRIFT = """
import json
reference = json.load(open("reference.json"))
json.dump({"data": open("data.txt").read()}, open("profile.json", "w"))
json.dump({"reference": reference["tag"], "reference_data": (reference["profile"] or {}).get("data")},
          open("drift.json", "w"))
"""
NO_REFERENCE = {"profile": None, "tag": None}


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


def test_the_projects_drift_paths_come_from_its_dvc_yaml() -> None:
    graph = read_graph(ROOT)
    assert drift_paths(graph, "drift") == DriftPaths(
        "drift", "metrics/drift.json", "data/profile.json", "reference/profile.json"
    )
    assert drift_paths(graph, None) is None
    assert drift_paths(graph, "nope", strict=False) is None
    with pytest.raises(DriftStageError, match="dvc.yaml has no stage 'nope'"):
        drift_paths(graph, "nope")
    with pytest.raises(DriftStageError, match=r"its cmd has no \['--profile', '--reference'\]"):
        drift_paths(graph, "split")


def test_sync_copies_an_owned_file_only_where_the_workspace_has_none(tmp_path: Path) -> None:
    project, root = tmp_path / "project", tmp_path / "ws"
    for folder in (project, root):
        (folder / "reference").mkdir(parents=True)
        sh(folder, "git", "init", "-q")
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (project / "reference/profile.json").write_text("shipped\n")
    (project / "code.py").write_text("x = 1\n")
    owned = ["reference/profile.json"]

    changed, _ = sync(project, root, None, owned)  # the first run: the shipped file seeds the workspace
    assert "reference/profile.json" in changed and (root / "reference/profile.json").read_text() == "shipped\n"

    (root / "reference/profile.json").write_text("published\n")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", "published")
    changed, removed = sync(project, root, None, owned)
    assert "reference/profile.json" not in changed + removed
    assert (root / "reference/profile.json").read_text() == "published\n"

    (project / "reference/profile.json").unlink()  # gone from the project: the workspace keeps its own
    _, removed = sync(project, root, None, owned)
    assert removed == [] and (root / "reference/profile.json").exists()


@pytest.mark.integration  # real git and DVC
def test_publish_and_rollback_make_the_served_versions_profile_the_reference(tmp_path: Path, helpers) -> None:
    toy = helpers.toy_project(tmp_path / "project")
    with (toy / "dvc.yaml").open("a") as f:
        f.write(TOY_DRIFT_STAGE)
    (toy / "drift.py").write_text(TOY_DRIFT)
    (toy / "reference.json").write_text(json.dumps(NO_REFERENCE))
    sh(toy, "git", "add", "-A")
    sh(toy, "git", "commit", "-q", "-m", "drift stage")
    env = {**os.environ, "RETRAIN_WORKER_ROOT": str(tmp_path / "worker")}
    for key in ("RETRAIN_DVC_REMOTE", "RETRAIN_GIT_REMOTE"):
        env.pop(key, None)
    fleet = steps.Fleet.resolve(toy, env)
    assert fleet.drift == DriftPaths("drift", "drift.json", "profile.json", "reference.json")

    def run_all(run: str) -> tuple[dict, dict]:
        prepared = steps.prepare(fleet, run, None)
        results: dict[str, dict] = {}
        for name in fleet.order:
            results[name] = steps.stage(fleet, run, prepared, name, list(results.values()))
        return prepared, results

    prepared, results = run_all("run-1")
    first = json.loads((Path(results["drift"]["workspace"]) / "drift.json").read_text())
    assert first == {"reference": None, "reference_data": None}
    published = steps.publish(fleet, "run-1", prepared, list(results.values()), 1, "toy", "first")
    assert published["pushed"]

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", fleet.ws.git_remote, str(clone))
    # the branch, where the next run starts: version 1's data is the reference, drift is up to date with it
    assert json.loads((clone / "reference.json").read_text()) == {"profile": {"data": "rows v1"}, "tag": "model-v1"}
    assert sh(clone, "git", "rev-parse", "HEAD~1").strip() == published["commit"]
    sh(clone, *dvc_command("pull", "-q"))
    assert json.loads(sh(clone, *dvc_command("status", "--json"))) == {}
    assert json.loads((clone / "drift.json").read_text()) == {"reference": "model-v1", "reference_data": "rows v1"}
    # the tag: exactly what version 1 was built and compared with, and DVC finds it up to date
    sh(clone, "git", "checkout", "-q", "model-v1")
    assert json.loads((clone / "reference.json").read_text()) == NO_REFERENCE
    sh(clone, *dvc_command("pull", "-q"))
    assert json.loads(sh(clone, *dvc_command("status", "--json"))) == {}

    # The next run keeps the published reference (the project's "none" is not copied over it): on
    # unchanged data nothing runs. New data: drift compares it with version 1's.
    _, again = run_all("run-2")
    assert {n: r["outcome"] for n, r in again.items()} == dict.fromkeys(fleet.order, "unchanged")
    (toy / "prep.py").write_text("open('data.txt', 'w').write('rows v2')\n")
    third_prepared, third = run_all("run-3")
    assert third["drift"]["outcome"] == "ran"
    compared = json.loads((Path(third["drift"]["workspace"]) / "drift.json").read_text())
    assert compared == {"reference": "model-v1", "reference_data": "rows v1"}
    assert json.loads((Path(third["drift"]["workspace"]) / "profile.json").read_text()) == {"data": "rows v2"}

    # Version 2 is published from the new data; a rollback to version 1 makes version 1's data the
    # reference again (the branch: drift up to date against it; the tags untouched).
    assert steps.publish(fleet, "run-3", third_prepared, list(third.values()), 2, "toy", "second")["pushed"]
    sh(clone, "git", "checkout", "-q", "main")
    sh(clone, "git", "pull", "-q", "--tags")
    assert json.loads((clone / "reference.json").read_text())["tag"] == "model-v2"
    head = steps.rollback_reference(fleet, 1, "rollback-1")
    assert head is not None
    sh(clone, "git", "pull", "-q")
    assert sh(clone, "git", "rev-parse", "HEAD").strip() == head
    assert json.loads((clone / "reference.json").read_text()) == {"profile": {"data": "rows v1"}, "tag": "model-v1"}
    sh(clone, *dvc_command("pull", "-q"))
    assert json.loads(sh(clone, *dvc_command("status", "--json"))) == {}
    assert json.loads((clone / "drift.json").read_text()) == {"reference": "model-v1", "reference_data": "rows v1"}
    # ...a second rollback to the same version changes nothing
    assert steps.rollback_reference(fleet, 1, "rollback-2") is None
    # ...and the next run on the same data finds drift already compared with version 1's: nothing runs
    _, fourth = run_all("run-4")
    assert {n: r["outcome"] for n, r in fourth.items()} == dict.fromkeys(fleet.order, "unchanged")

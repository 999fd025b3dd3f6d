"""The task bodies (orchestration/steps.py) on a toy DVC project (conftest.py: `prep` writes
data.txt; `fold@0..2` each read it; `summary` reads the folds), as workers that share nothing but
the workspace's git remote and the DVC remote (a local folder here): the real DVC and git, no
Airflow."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
from support import GIT_ENV

from orchestration import lockfile, steps
from orchestration.dvc_runner import StageFailed
from orchestration.remote import RemoteError
from orchestration.workspace import RUN_REFS, dvc_command

pytestmark = pytest.mark.integration  # real git and DVC, a few seconds per stage task

ORDER = ["prep", "fold@0", "fold@1", "fold@2", "summary"]


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture
def toy(tmp_path: Path, helpers) -> Path:
    return helpers.toy_project(tmp_path / "project")


def worker(project: Path, name: str) -> steps.Fleet:
    """A worker with its own root (checkouts and DVC cache) under the toy project's tmp folder."""
    env = {**os.environ, "RETRAIN_WORKER_ROOT": str(project.parent / f"worker-{name}")}
    env.pop("RETRAIN_DVC_REMOTE", None)
    env.pop("RETRAIN_GIT_REMOTE", None)
    return steps.Fleet.resolve(project, env)


def run_all(prepare_on: steps.Fleet, placement: dict[str, steps.Fleet], run: str) -> tuple[dict, dict]:
    prepared = steps.prepare(prepare_on, run, None)
    results: dict[str, dict] = {}
    for name in ORDER:
        results[name] = steps.stage(placement[name], run, prepared, name, list(results.values()))
    return prepared, results


def test_two_workers_share_nothing_but_the_remotes(toy: Path) -> None:
    a, b = worker(toy, "a"), worker(toy, "b")
    placement = {"prep": a, "fold@0": b, "fold@1": a, "fold@2": b, "summary": a}
    prepared, results = run_all(a, placement, "run-1")

    assert [results[n]["outcome"] for n in ORDER] == ["ran"] * 5
    for name, fleet in placement.items():
        workspace = Path(results[name]["workspace"])
        assert workspace.is_relative_to(fleet.ws.worker_root), (name, workspace)
        assert results[name]["lock"][name]["outs"], name
    assert a.ws.worker_root != b.ws.worker_root and a.ws.cache_dir != b.ws.cache_dir
    # fold@0 on worker b read what prep wrote on worker a, through the DVC remote
    fold0 = json.loads((Path(results["fold@0"]["workspace"]) / "out" / "0.json").read_text())
    assert fold0["data"] == "rows v1"
    summary = json.loads((Path(results["summary"]["workspace"]) / "summary.json").read_text())
    assert summary["folds"] == ["0.json", "1.json", "2.json"]

    published = steps.publish(b, "run-1", prepared, list(results.values()), 1, "toy", "first")
    assert published["pushed"] and published["tags"][0] == "model-v1"
    assert "toy@v1.0.0" in published["tags"] and "toy#prod#1" in published["tags"]
    # A retry after success publishes nothing new.
    again = steps.publish(a, "run-1", prepared, list(results.values()), 1, "toy", "first")
    assert again == {"tag": "model-v1", "commit": published["commit"], "pushed": False}

    # Any machine: a fresh clone of the git remote at model-v1, `dvc pull`, and DVC finds it up to date.
    clone = toy.parent / "clone"
    sh(toy.parent, "git", "clone", "-q", a.ws.git_remote, str(clone))
    sh(clone, "git", "checkout", "-q", "model-v1")
    sh(clone, *dvc_command("pull", "-q"))
    assert (clone / "summary.json").is_file() and (clone / "out" / "2.json").is_file()
    status = json.loads(sh(clone, *dvc_command("status", "--json")))
    assert status == {}, status
    assert sh(clone, "git", "log", "-1", "--format=%an <%ae>", "model-v1").strip() == a.ws.params.git_author
    assert sh(clone, "git", "rev-parse", "origin/main").strip() == published["commit"]


def test_a_second_run_finds_everything_unchanged_or_restored(toy: Path) -> None:
    a, b = worker(toy, "a"), worker(toy, "b")
    placement = {"prep": a, "fold@0": b, "fold@1": a, "fold@2": b, "summary": a}
    prepared, results = run_all(a, placement, "run-1")
    steps.publish(a, "run-1", prepared, list(results.values()), 1, "toy", "first")

    # Same sources, a fresh third worker: every stage is up to date against the published lock.
    c = worker(toy, "c")
    _, again = run_all(c, dict.fromkeys(ORDER, c), "run-2")
    assert {n: again[n]["outcome"] for n in ORDER} == dict.fromkeys(ORDER, "unchanged")
    assert all(again[n]["lock"] == results[n]["lock"] for n in ORDER)
    assert all(again[n]["pull_s"] == again[n]["push_s"] == 0 for n in ORDER), "nothing moves for an unchanged run"

    # An unpublished run (run-1 of a project whose remote has run cache but no published lock
    # for these entries): a fresh worker restores every stage from DVC's run cache.
    (toy / "prep.py").write_text("open('data.txt', 'w').write('rows v2')\n")
    _, third = run_all(a, placement, "run-3")  # runs everything for v2, publishes nothing
    assert [third[n]["outcome"] for n in ORDER] == ["ran"] * 5
    d = worker(toy, "d")
    _, restored = run_all(d, dict.fromkeys(ORDER, d), "run-4")
    assert {n: restored[n]["outcome"] for n in ORDER} == dict.fromkeys(ORDER, "restored")
    assert all(restored[n]["lock"] == third[n]["lock"] for n in ORDER)


def test_the_task_log_says_what_the_stage_did_without_dvcs_git_hint(
    toy: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    a = worker(toy, "a")
    prepared = steps.prepare(a, "run-1", None)
    with caplog.at_level(logging.INFO):
        steps.stage(a, "run-1", prepared, "prep", [])
    seen = caplog.text + "".join(capfd.readouterr())
    assert "stage prep ran in" in seen
    assert "workspace: " in seen
    # the first run of a stage: no lock entry yet, rather than every dep "modified"
    assert "stage prep changed (not run before: dvc.lock has no entry for it yet)" in seen
    assert "modified" not in seen
    assert "To track the changes with git" not in seen and "auto staging" not in seen


def test_a_failing_stage_command_fails_with_the_stage_named(toy: Path) -> None:
    (toy / "prep.py").write_text("raise SystemExit('deliberately broken')\n")
    a = worker(toy, "a")
    prepared = steps.prepare(a, "run-1", None)
    with pytest.raises(StageFailed, match="stage prep failed"):
        steps.stage(a, "run-1", prepared, "prep", [])
    assert not any((toy / ".dvc-remote").rglob("runs/*")), "a failed stage pushed a run cache entry"


def test_an_unreachable_dvc_remote_fails_naming_it(toy: Path) -> None:
    a = worker(toy, "a")
    prepared = steps.prepare(a, "run-1", None)
    blocker = toy.parent / "not-a-folder"
    blocker.write_text("a file where the remote's parent folder should be\n")
    env = {**os.environ, "RETRAIN_WORKER_ROOT": str(a.ws.worker_root), "RETRAIN_DVC_REMOTE": str(blocker / "remote")}
    broken = steps.Fleet.resolve(toy, env)
    with pytest.raises(RemoteError, match=rf"DVC remote {blocker}/remote: .*Cause: "):
        steps.stage(broken, "run-1", prepared, "prep", [])


def test_a_stage_without_its_upstream_results_is_refused(toy: Path) -> None:
    a = worker(toy, "a")
    prepared = steps.prepare(a, "run-1", None)
    with pytest.raises(Exception, match=r"no dvc.lock entry for \['prep'\]"):
        steps.stage(a, "run-1", prepared, "fold@0", [])


def test_prepare_pushes_the_run_commit_to_a_run_ref(toy: Path) -> None:
    a = worker(toy, "a")
    prepared = steps.prepare(a, "manual__2026-01-26T00:00:00+00:00", None)
    assert prepared.ref.startswith(RUN_REFS) and ":" not in prepared.ref
    remote_refs = sh(toy, "git", "ls-remote", a.ws.git_remote)
    assert f"{prepared.commit}\t{prepared.ref}" in remote_refs
    # the committed DVC config names the remote (never a credential), so a clone can `dvc pull`
    config = sh(toy, "git", "--git-dir", a.ws.git_remote, "show", f"{prepared.commit}:.dvc/config")
    assert "remote = retrain" in config and str(toy / ".dvc-remote") in config


def test_the_registry_moves_prod_on_promotion_and_on_rollback(toy: Path) -> None:
    from orchestration import registry
    from pipeline.errors import StageError

    a = worker(toy, "a")
    everywhere = dict.fromkeys(ORDER, a)
    prepared, results = run_all(a, everywhere, "run-1")
    steps.publish(a, "run-1", prepared, list(results.values()), 1, "toy", "first")
    (toy / "prep.py").write_text("open('data.txt', 'w').write('rows v2')\n")
    prepared, results = run_all(a, everywhere, "run-2")
    second = steps.publish(a, "run-2", prepared, list(results.values()), 2, "toy", "second")
    assert second["tags"] == ["model-v2", "toy@v2.0.0", "toy#prod#2"]
    assert registry.show(a.ws)["toy"] == {
        "version": "v2.0.0",
        "stage": {"prod": "v2.0.0"},
        "registered": True,
        "active": True,
    }

    # GTO orders assignments by their tag's time, in whole seconds: let the rollback be later.
    time.sleep(1.1)
    assert registry.promote(a.ws, "toy", 1, "rolled back from 2") == "toy#prod#3"
    assert registry.show(a.ws)["toy"]["stage"] == {"prod": "v1.0.0"}
    with pytest.raises(StageError, match=r"toy version 7 was never published .*published: \['v1.0.0', 'v2.0.0'\]"):
        registry.promote(a.ws, "toy", 7, "no such version")


def test_a_retry_on_another_worker_finishes_the_run_and_nothing_is_half_published(toy: Path) -> None:
    a, b = worker(toy, "a"), worker(toy, "b")
    prepared = steps.prepare(a, "run-1", None)
    results = [steps.stage(a, "run-1", prepared, "prep", [])]
    # Worker a runs fold@0, pushes its outputs and run-cache entry, and dies before reporting: its
    # result never reaches XCom. Nothing is published meanwhile.
    lost = steps.stage(a, "run-1", prepared, "fold@0", results)
    assert lost["outcome"] == "ran"
    assert sh(toy, "git", "ls-remote", "--heads", "--tags", a.ws.git_remote) == ""
    # Airflow retries the task (try 2) on worker b: a fresh checkout, restored from the run cache.
    retried = steps.stage(b, "run-1", prepared, "fold@0", results, try_number=2)
    assert retried["outcome"] == "restored" and retried["lock"] == lost["lock"]
    assert Path(retried["workspace"]).name == "fold@0.try2"
    results.append(retried)
    for name in ORDER[2:]:
        results.append(steps.stage(b, "run-1", prepared, name, results))
    published = steps.publish(b, "run-1", prepared, results, 1, "toy", "first")
    assert published["pushed"]
    assert "model-v1" in sh(toy, "git", "ls-remote", "--tags", a.ws.git_remote)


def test_inputs_in_the_worker_cache_are_not_fetched_from_the_remote(toy: Path, monkeypatch) -> None:
    """One machine: the worker's DVC cache holds every upstream output already, so a stage checks
    its inputs out of it and asks the remote nothing; a worker without them pulls them."""
    from dvc.repo import Repo

    fetched: list[object] = []
    real_fetch = Repo.fetch

    def spy(self, *args, **kwargs):
        fetched.append(args[0] if args else kwargs.get("targets"))
        return real_fetch(self, *args, **kwargs)

    monkeypatch.setattr(Repo, "fetch", spy)
    a, b = worker(toy, "a"), worker(toy, "b")
    prepared = steps.prepare(a, "run-1", None)
    results = [steps.stage(a, "run-1", prepared, "prep", [])]
    same = steps.stage(a, "run-1", prepared, "fold@0", results)
    assert same["outcome"] == "ran" and fetched == []
    other = steps.stage(b, "run-1", prepared, "fold@1", results)
    assert other["outcome"] == "ran" and fetched == [["data.txt"]]
    for result, fold in ((same, "0"), (other, "1")):
        assert json.loads((Path(result["workspace"]) / "out" / f"{fold}.json").read_text())["data"] == "rows v1"


def test_a_stage_moves_only_its_own_run_cache_entry(toy: Path) -> None:
    """DVC's own run-cache transfer copies every entry of every stage each time; a stage task
    pulls and pushes only the entries of its own run (its stage on these inputs)."""
    a = worker(toy, "a")
    prepared, results = run_all(a, dict.fromkeys(ORDER, a), "run-1")
    remote_runs = toy / ".dvc-remote" / "runs"
    assert len(list(remote_runs.glob("*/*/*"))) == len(ORDER), "one entry per stage"

    # A fresh worker retries fold@2 only: it restores that stage and copies nothing else.
    d = worker(toy, "d")
    retried = steps.stage(d, "run-1", prepared, "fold@2", [results["prep"]], try_number=2)
    assert retried["outcome"] == "restored" and retried["lock"] == results["fold@2"]["lock"]
    copied = list((d.ws.cache_dir / "runs").glob("*/*/*"))
    assert len(copied) == 1, copied
    assert (remote_runs / copied[0].relative_to(d.ws.cache_dir / "runs")).is_file()


def test_a_stage_checkout_locks_only_its_stage_and_its_inputs_writers(toy: Path) -> None:
    """DVC reads and rewrites the checkout's dvc.lock many times per task: it holds only what the
    task's DVC calls need, while every upstream entry is still checked and publish gets them all."""
    a = worker(toy, "a")
    prepared, results = run_all(a, dict.fromkeys(ORDER, a), "run-1")
    summary = lockfile.read(Path(results["summary"]["workspace"]))
    assert sorted(summary) == ["fold@0", "fold@1", "fold@2", "summary"]
    published = steps.publish(a, "run-1", prepared, list(results.values()), 1, "toy", "first")
    assert sorted(lockfile.read(Path(published["workspace"]))) == sorted(ORDER)

    # The next run starts from the published lock: the prep task's checkout holds prep's entry alone.
    again = steps.stage(a, "run-2", steps.prepare(a, "run-2", None), "prep", [])
    assert again["outcome"] == "unchanged"
    assert list(lockfile.read(Path(again["workspace"]))) == ["prep"]

"""`run_trial` on a real DVC repository: each trial is a real `dvc exp run train` on digits with a
tiny cnn, reported epoch by epoch to a real Optuna study (SQLite); pruned and failed trials are
saved as experiments too, and every trial's experiment is pushed to a bare git remote, from which a
fresh clone lists them with `dvc exp show`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from optuna.trial import TrialState
from sweep_project import env, experiments, make_project, sh

from orchestration.sweep import study as studies
from orchestration.sweep.params import SweepParams
from orchestration.sweep.trial import run_trial
from orchestration.sweep.winner import SweepFailed, best

pytestmark = pytest.mark.integration  # the real DVC CLI

EPOCHS = 30  # a tenth of a second each: long enough for a pruned trial to be stopped before its end
# Two good learning rates, then one so small that its curve stays far behind theirs at epoch 2.
GRID = SweepParams.model_validate(
    {
        "sampler": "grid",
        "trials": 3,
        "pruner": {"warmup_epochs": 1, "min_trials": 2},
        "space": {"train.optimizer.lr": {"choices": [0.01, 0.003, 1.0e-6]}},
    }
)
# Schema-valid, fails at run time: two hosts need TRAIN_RDZV_ENDPOINT, which the tests' env removes.
FAILING = SweepParams.model_validate({"trials": 1, "space": {"train.distributed.nnodes": {"choices": [2]}}})


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("sweep-trials")
    repo = make_project(base / "project", train__epochs=EPOCHS)
    remote = base / "remote.git"
    sh(base, "git", "init", "-q", "--bare", str(remote))
    sh(repo, "git", "push", "-q", str(remote), "HEAD:refs/heads/master")
    sh(repo, sys.executable, "-m", "dvc", "remote", "add", "--local", "-d", "store", str(base / "dvc-store"))
    url = f"sqlite:///{base / 'optuna.db'}"
    key = studies.data_key(repo)
    specs = sorted(studies.plan(GRID, url, key), key=lambda spec: -spec["params"]["train.optimizer.lr"])
    results = [run_trial(repo, spec, GRID, url, git_remote=str(remote), env=env()) for spec in specs]
    (failing,) = studies.plan(FAILING, url, key)
    results.append(run_trial(repo, failing, FAILING, url, git_remote=str(remote), env=env()))
    return {"repo": repo, "remote": remote, "url": url, "results": results, "base": base, "specs": specs}


def test_complete_trials_are_experiments_with_their_params_and_metrics(ran) -> None:
    first, second = ran["results"][:2]
    assert (first["state"], second["state"]) == ("complete", "complete"), ran["results"]
    shown = experiments(ran["repo"])
    for result in (first, second):
        assert result["experiment"] == f"{result['study']}-t{result['number']}" and result["error"] is None
        listed = shown[result["experiment"]]
        assert listed["params"]["optimizer"]["lr"] == result["params"]["train.optimizer.lr"]
        assert listed["metrics"]["best"]["val_accuracy"] == result["value"]
        assert listed["metrics"]["step"] == EPOCHS - 1  # every epoch ran
    assert best(GRID, ran["url"], first["study"])["value"] == max(first["value"], second["value"])


def test_a_trial_behind_the_others_is_pruned_and_saved_with_what_it_logged(ran) -> None:
    pruned = ran["results"][2]
    assert pruned["state"] == "pruned" and pruned["value"] is None, pruned
    assert pruned["experiment"].endswith("-pruned")
    listed = experiments(ran["repo"])[pruned["experiment"]]
    assert listed["params"]["optimizer"]["lr"] == 1.0e-6
    assert listed["metrics"]["step"] < EPOCHS - 1  # stopped before its last epoch
    assert listed["metrics"]["val_accuracy"] < min(r["value"] for r in ran["results"][:2])
    study = studies.open_study(GRID, ran["url"], pruned["study"])
    assert study.trials[pruned["number"]].state == TrialState.PRUNED


def test_a_failing_training_is_returned_as_failed_not_raised(ran) -> None:
    failed = ran["results"][3]
    assert failed["state"] == "failed" and failed["value"] is None
    assert "TRAIN_RDZV_ENDPOINT" in failed["error"]  # the stage's own message
    assert failed["experiment"].endswith("-failed") and failed["experiment"] in experiments(ran["repo"])
    with pytest.raises(SweepFailed, match=r"t0 fail"):  # its sweep had no other trial
        best(FAILING, ran["url"], failed["study"])


def test_every_trial_is_listed_in_a_fresh_clone_of_the_remote(ran) -> None:
    clone = ran["base"] / "clone"
    subprocess.run(["git", "clone", "-q", str(ran["remote"]), str(clone)], check=True, env=env())
    sh(clone, "git", "fetch", "-q", "origin", "refs/exps/*:refs/exps/*")
    shown = experiments(clone)
    assert {r["experiment"] for r in ran["results"]} <= set(shown)
    pruned = ran["results"][2]
    assert shown[pruned["experiment"]]["params"]["optimizer"]["lr"] == 1.0e-6
    # the trained model went to the DVC remote: the clone can fetch the winner's outputs
    assert any((ran["base"] / "dvc-store").rglob("*")), "dvc exp push sent nothing to the DVC remote"


def test_a_retried_trial_returns_what_its_first_try_told_and_trains_nothing(ran) -> None:
    """An Airflow retry of a trial task whose first try told the study (then lost its worker, say)."""
    before = experiments(ran["repo"])
    for spec, result in zip(ran["specs"], ran["results"], strict=False):
        again = run_trial(ran["repo"], spec, GRID, ran["url"], env=env())
        assert {k: again[k] for k in ("state", "value", "experiment")} == {
            k: result[k] for k in ("state", "value", "experiment")
        }
    assert experiments(ran["repo"]) == before

"""`python -m orchestration.sweep run` on a tiny copy of the project: two trials at once, each in its
own clone; the winner's values land in the project's params.yaml, the project's `dvc exp show`
lists both trials, and a second run retrains nothing."""

from __future__ import annotations

import sys

import pytest
import yaml
from sweep_project import experiments, make_project, sh

pytestmark = pytest.mark.integration  # the real DVC CLI

SWEEP = {
    "sampler": "grid",
    "trials": 2,
    "parallel": 2,
    "pruner": {"enabled": False},
    "space": {"train.optimizer.lr": {"choices": [0.01, 0.0003]}},
}


def test_local_sweep_runs_trials_in_parallel_and_writes_the_winner(tmp_path) -> None:
    repo = make_project(tmp_path / "project", sweep=SWEEP)
    out = sh(repo, sys.executable, "-m", "orchestration.sweep", "run")
    rows = [line.split() for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert len(rows) == 2 and all(row[1] == "complete" for row in rows), out
    values = {float(row[3].split("=")[1]): float(row[2]) for row in rows}  # lr -> best/val_accuracy
    assert set(values) == {0.01, 0.0003}
    winner = max(values, key=lambda lr: values[lr])
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["optimizer"]["lr"] == winner

    shown = experiments(repo)  # the trials were pushed back into the project's repository
    trials = {name: e for name, e in shown.items() if name.startswith("sweep-")}
    assert sorted(e["params"]["optimizer"]["lr"] for e in trials.values()) == [0.0003, 0.01]

    again = sh(repo, sys.executable, "-m", "orchestration.sweep", "run")
    assert again.count("complete") == 2 and len(experiments(repo)) == len(shown)  # nothing retrained

"""A tiny copy of the project for the sweep tests: digits as the user's CSV, a small cnn trained for
a few epochs, `dvc repro split` done and committed, so that a trial's `dvc exp run train` finds its
inputs in place (what a worker checkout or the local sweep's clone has)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from support import GIT_ENV, copy_project, edit_params

TINY_TRAIN = {
    "train__epochs": 4,
    "train__batch_size": 32,
    "train__model__channels": [8],
    "train__model__hidden": [32],
    "train__device": "cpu",
    "train__checkpoint_interval_s": 0.0,
    "train__early_stopping__patience": 50,
    "split__folds": [0, 1],
}


def env() -> dict[str, str]:
    """This interpreter's bin first on PATH (DVC and the stages' `python`), a git identity, and no
    multi-host rendezvous (the failing trial relies on its absence)."""
    base = {k: v for k, v in os.environ.items() if k != "TRAIN_RDZV_ENDPOINT"}
    return {**base, **GIT_ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base['PATH']}"}


def sh(cwd: Path, *cmd: str) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if done.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def make_project(target: Path, **changes: Any) -> Path:
    """The copy, with `changes` (edit_params spelling) on top of the tiny training params."""
    repo = copy_project(target)
    from sklearn.datasets import load_digits

    digits = load_digits()
    table = pd.DataFrame(digits.data.astype(int), columns=[f"px_{i}" for i in range(64)])
    table.insert(0, "label", digits.target)
    (repo / "raw").mkdir()
    table.to_csv(repo / "raw" / "digits.csv", index=False)
    edit_params(repo, data__source="raw/digits.csv", **{**TINY_TRAIN, **changes})
    sh(repo, sys.executable, "-m", "dvc", "repro", "--quiet", "split")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny project, split done")
    return repo


def experiments(repo: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` as experiment name -> {"params": train section, "metrics": train metrics}."""
    import json

    shown = json.loads(sh(repo, sys.executable, "-m", "dvc", "exp", "show", "--json"))
    found = {}
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for rev in experiment["revs"]:
                data = rev["data"]
                metrics = (data.get("metrics") or {}).get("dvclive/train/metrics.json", {}).get("data", {})
                found[rev["name"]] = {"params": data["params"]["params.yaml"]["data"]["train"], "metrics": metrics}
    return found

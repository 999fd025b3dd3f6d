"""The real `dvc repro` on a copy of the project: what runs, what is skipped, what survives.

The copy points `data.source` at a CSV file of its own (as a user would), trains for only a few
epochs with two folds, and is a fresh git repository with its own DVC cache.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from support import GIT_ENV, copy_project, edit_params

pytestmark = pytest.mark.integration

DATA_STAGES = {"embed", "clean", "split"}


def sh(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    # `dvc` and the stages' `python` must be this interpreter's, however pytest was started.
    env = {**os.environ, **GIT_ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def ran(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> Path:
    """A copy of the project's tracked files, as a new git repository with a user CSV source."""
    repo = copy_project(tmp_path_factory.mktemp("project"))
    from sklearn.datasets import load_digits

    digits = load_digits()
    table = pd.DataFrame(digits.data.astype(int), columns=[f"px_{i}" for i in range(64)])
    table.insert(0, "label", digits.target)
    (repo / "raw").mkdir()
    table.to_csv(repo / "raw" / "digits.csv", index=False)
    edit_params(repo, data__source="raw/digits.csv", train__epochs=2, split__folds=[0, 1])
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "user data")
    return repo


@pytest.fixture(scope="module")
def first_repro(copied: Path) -> subprocess.CompletedProcess:
    """The copy's first `dvc repro`: every stage runs."""
    return sh(copied, "dvc", "repro")


@pytest.fixture
def repo(copied: Path, first_repro: subprocess.CompletedProcess) -> Path:
    """The copy, up to date whichever tests ran before this one (each test passes alone and in any
    order): a `dvc repro` that reruns nothing unless a test before it left something to do."""
    sh(copied, "dvc", "repro")
    return copied


def test_full_repro_then_nothing_to_do(repo, first_repro):
    assert ran(first_repro) >= DATA_STAGES, first_repro.stdout
    assert (repo / "data" / "clean.parquet").exists()
    second = sh(repo, "dvc", "repro")
    assert ran(second) == set(), second.stdout


def test_split_seed_reruns_split_but_not_clean(repo):
    edit_params(repo, split__seed=7)
    result = sh(repo, "dvc", "repro")
    assert "split" in ran(result)
    assert not {"embed", "clean"} & ran(result)


def test_train_lr_reruns_training_and_later_stages_only(repo):
    edit_params(repo, train__optimizer__lr=0.002)
    result = sh(repo, "dvc", "repro")
    stages = ran(result)
    assert {"train", "crossval@0", "crossval@1", "export", "evaluate"} <= stages, result.stdout
    assert not DATA_STAGES & stages


def _parts(table):
    """The clean table's bytes, part by part (a folder of Parquet parts)."""
    return {p.name: p.read_bytes() for p in sorted(table.iterdir())}


def test_corrupt_raw_file_fails_clean_and_last_good_outputs_restore(repo):
    before = _parts(repo / "data" / "clean.parquet")
    raw = repo / "raw" / "digits.csv"
    good = raw.read_bytes()
    raw.write_text("label,px_0\n1,not-a-number\n")
    failed = sh(repo, "dvc", "repro", check=False)
    assert failed.returncode != 0
    assert "clean failed" in failed.stderr + failed.stdout
    assert "raw table failed validation" in failed.stderr + failed.stdout
    assert "dvc checkout clean" in failed.stderr + failed.stdout  # DVC removed the outputs before the stage ran

    # The last good outputs are still in the DVC cache and come back with `dvc checkout`.
    sh(repo, "dvc", "checkout", "--force")
    assert _parts(repo / "data" / "clean.parquet") == before
    raw.write_bytes(good)
    assert ran(sh(repo, "dvc", "repro")) == set()


def test_novelty_on_reruns_novelty_export_tune_evaluate_and_serves_two_outputs(repo):
    """Turning novelty on retrains nothing but the autoencoder; the candidate then has both outputs."""
    import json

    edit_params(repo, novelty__enabled=True, novelty__epochs=5)
    result = sh(repo, "dvc", "repro")
    assert ran(result) == {"novelty", "export", "tune", "evaluate"}, result.stdout
    card = json.loads((repo / "models" / "candidate" / "model_card.json").read_text())
    assert [o["name"] for o in card["outputs"]] == ["probabilities", "novelty"]
    assert json.loads((repo / "metrics" / "novelty.json").read_text())["threshold"] == card["novelty"]["threshold"]
    edit_params(repo, novelty__enabled=False, novelty__epochs=60)
    sh(repo, "dvc", "repro")  # DVC's run cache may restore the earlier outputs instead of running the stages
    card = json.loads((repo / "models" / "candidate" / "model_card.json").read_text())
    assert [o["name"] for o in card["outputs"]] == ["probabilities"] and "novelty" not in card

"""Stage tasks side by side in one workspace: DVC's repository lock must not fail any of them.

A toy DVC project whose foreach stages each sleep while holding nothing but their own outputs,
run through `run_stage` from parallel threads the way parallel Airflow tasks run it.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestration.dvc_runner import StageFailed, outcome, run_stage
from orchestration.workspace import dvc_command, tool_env

FOLDS = 4
SLEEP_S = 2.0

WORK = """
import json, os, sys, time
item = sys.argv[1]
start = time.time()
time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
os.makedirs("out", exist_ok=True)
with open(f"out/{item}.json", "w") as f:
    json.dump({"start": start, "end": time.time()}, f)
"""

DVC_YAML = """
stages:
  prep:
    cmd: python -c "open('data.txt', 'w').write('rows')"
    outs:
      - data.txt
  fold:
    foreach: ${folds}
    do:
      cmd: python work.py ${item}
      deps:
        - data.txt
        - work.py
      outs:
        - out/${item}.json
  broken:
    cmd: python -c "raise SystemExit('deliberately broken')"
    deps:
      - data.txt
"""


def sh(cwd: Path, *cmd: str) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env=tool_env())


@pytest.fixture
def toy_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "toy"
    repo.mkdir()
    (repo / "work.py").write_text(WORK)
    (repo / "dvc.yaml").write_text(textwrap.dedent(DVC_YAML))
    (repo / "params.yaml").write_text(f"folds: {list(range(FOLDS))}\n")
    sh(repo, "git", "init", "-q")
    sh(repo, *dvc_command("init", "-q"))
    sh(repo, *dvc_command("config", "core.analytics", "false"))
    monkeypatch.setenv("TOY_SLEEP", str(SLEEP_S))
    return repo


def test_parallel_stages_share_one_workspace(toy_repo: Path) -> None:
    assert run_stage(toy_repo, "prep")["outcome"] == "ran"
    with ThreadPoolExecutor(FOLDS) as pool:
        results = list(pool.map(lambda i: run_stage(toy_repo, f"fold@{i}"), range(FOLDS)))
    assert [r["outcome"] for r in results] == ["ran"] * FOLDS

    # The commands overlapped in time: DVC released its lock while they ran.
    spans = [json.loads((toy_repo / "out" / f"{i}.json").read_text()) for i in range(FOLDS)]
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)
    lock = (toy_repo / "dvc.lock").read_text()
    assert all(f"fold@{i}" in lock for i in range(FOLDS))

    # A second pass finds every fold up to date.
    with ThreadPoolExecutor(FOLDS) as pool:
        again = list(pool.map(lambda i: run_stage(toy_repo, f"fold@{i}"), range(FOLDS)))
    assert [r["outcome"] for r in again] == ["unchanged"] * FOLDS


def test_failed_stage_raises_with_its_output(toy_repo: Path) -> None:
    run_stage(toy_repo, "prep")
    with pytest.raises(StageFailed, match="deliberately broken"):
        run_stage(toy_repo, "broken")


def test_outcome_reads_dvc_log_lines() -> None:
    assert outcome("Running stage 'train':\n> python -m stages.train", "train") == "ran"
    assert outcome("Stage 'crossval@1' didn't change, skipping", "crossval@1") == "unchanged"
    assert outcome("Stage 'export' is cached - skipping run, checking out outputs", "export") == "restored"
    assert outcome("Stage 'crossval@1' didn't change, skipping", "crossval@2") == "unknown"

"""The local sweep's wall time with one trial at a time against two at a time, and what the sweep
buys: the best trial's test accuracy beside the default params'.

    python bench/sweep_parallel.py    # a few minutes on two cores

Each measurement runs in a fresh copy of the project (its tracked files as a new git repository,
the embedded digits, `dvc repro split` done before the clock starts) with the same 8-trial random
sweep (same seed: the same 8 trials) over the learning rate, the cnn's widths and the epochs, the
pruner off so that both runs train exactly the same trials; `sweep.parallel` is 1, then 2. The
winner's params and the default params are then each trained and scored by `dvc repro evaluate`
(train, export, evaluate on the test split). Prints wall seconds, the ratio parallel 2 / parallel 1
and both test accuracies, with the machine's load average beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
SWEEP: dict[str, Any] = {
    "enabled": True,
    "sampler": "random",
    "trials": 8,
    "seed": 0,
    "pruner": {"enabled": False},
    "space": {
        "train.optimizer.lr": {"low": 0.0003, "high": 0.01, "log": True},
        "train.model.channels": {"choices": [[16, 32], [32, 64]]},
        "train.epochs": {"choices": [4, 8]},
    },
}


def env() -> dict[str, str]:
    return {**os.environ, **GIT_IDENTITY, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def sh(cwd: Path, *cmd: str) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def copy_project(target: Path, sweep: dict[str, Any], arch: str | None = None) -> Path:
    """The project's tracked files as a new git repository, with `sweep` over its sweep: section,
    `arch` as the model family (None: params.yaml's) and the train inputs made (`dvc repro split`)."""
    listed = sh(ROOT, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in listed:
        if name and (ROOT / name).is_file() and name != "dvc.lock" and "__pycache__" not in name:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["sweep"] = {**params["sweep"], **sweep}
    if arch is not None:
        params["train"]["model"]["arch"] = arch
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(target, "git", "init", "-q")
    sh(target, sys.executable, "-m", "dvc", "repro", "--quiet", "split")
    sh(target, "git", "add", "-A")
    sh(target, "git", "commit", "-qm", "bench copy")
    return target


def sweep_seconds(work: Path, parallel: int) -> tuple[float, Path]:
    project = copy_project(work / f"parallel-{parallel}", {**SWEEP, "parallel": parallel})
    started = time.perf_counter()
    sh(project, sys.executable, "-m", "orchestration.sweep", "run")
    return time.perf_counter() - started, project


def test_accuracy(project: Path) -> float:
    sh(project, sys.executable, "-m", "dvc", "repro", "--quiet", "evaluate")
    return float(json.loads((project / "metrics" / "evaluate.json").read_text())["accuracy"])


def main() -> None:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        work = Path(tmp)
        one, _ = sweep_seconds(work, 1)
        two, swept = sweep_seconds(work, 2)
        train = yaml.safe_load((swept / "params.yaml").read_text())["train"]
        winner = {key: train_value(train, key) for key in SWEEP["space"]}
        defaults = copy_project(work / "defaults", {**SWEEP, "enabled": False})
        accuracy_winner, accuracy_default = test_accuracy(swept), test_accuracy(defaults)
    print(f"{os.cpu_count()} cores, load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print(f"8 trials, 1 at a time: {one:6.1f} s")
    print(f"8 trials, 2 at a time: {two:6.1f} s   ratio 2/1 = {two / one:.2f}")
    print(f"winner {json.dumps(winner)}: test accuracy {accuracy_winner:.4f}")
    print(f"default params:  test accuracy {accuracy_default:.4f}")


def train_value(train: dict[str, Any], key: str) -> Any:
    node: Any = train
    for part in key.removeprefix("train.").split("."):
        node = node[part]
    return node


if __name__ == "__main__":
    main()

"""What a sweep buys the transformer on digits: the test accuracy of the sweep's winner beside the
transformer's family defaults (`train.families.transformer`).

    python bench/sweep_transformer.py [--trials 8]    # several minutes on two cores

In a fresh copy of the project (its tracked files as a new git repository, the embedded digits,
`dvc repro split` done before the clock starts) with `train.model.arch: transformer`, a TPE sweep
(seed 0, one trial at a time, the pruner as params.yaml has it; `--no-pruner`: off) searches the learning rate on a log
range around the family's 0.002, the encoder's depth and the epochs, through the project's own
local sweep (`python -m orchestration.sweep run`), which writes the winner into that copy's
params.yaml. With arch transformer each swept key is written where the family's override would
otherwise win (`train.families.transformer.optimizer.lr`, `...epochs`; pipeline.params.effective_key).
The winner's params and, in a second fresh copy, the family defaults are then each trained and
scored on the test split through the stage cores (the train stage's `run` on the copy's
data/clean.parquet and data/split.parquet, then the accuracy of the kept weights, as
bench/model_families.py scores): `dvc repro evaluate` would go through export, which refuses a
one-block transformer (its TorchScript GPU entry fails the device check), and depth 1 is in the
space. On CPU a seed repeats bit for bit, so the winner retrains to the trial's weights. Prints
every trial (state, objective, params), both test accuracies and their difference, with the
machine's load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sweep_parallel import copy_project, sh  # noqa: E402  # the scratch copy and its commands

from pipeline.compute import device_tensors  # noqa: E402
from pipeline.params import Params, TrainParams, effective_key, parse_params, read_params  # noqa: E402
from pipeline.rows import SplitTable  # noqa: E402
from pipeline.training import evaluate  # noqa: E402
from stages import train  # noqa: E402

SPACE: dict[str, Any] = {
    "train.optimizer.lr": {"low": 0.0005, "high": 0.008, "log": True},  # the family's 0.002, x4 either way
    "train.model.transformer.depth": {"choices": [1, 2, 3]},  # the shared default is 2
    "train.epochs": {"low": 20, "high": 60, "step": 20},  # the family's 60, and less
}


def sweep_section(trials: int, pruner: bool) -> dict[str, Any]:
    section = {"enabled": True, "sampler": "tpe", "trials": trials, "parallel": 1, "seed": 0, "space": SPACE}
    return section if pruner else {**section, "pruner": {"enabled": False}}


def project_params(project: Path) -> Params:
    """The copy's params as a stage reads them (the transformer family's override merged in)."""
    return parse_params(read_params(project / "params.yaml"))


def swept_values(train: TrainParams) -> dict[str, Any]:
    return {"lr": train.optimizer.lr, "depth": train.model.transformer.depth, "epochs": train.epochs}


def scores(project: Path) -> tuple[float, float]:
    """Train with the copy's params on its split (the train stage's core): the kept weights'
    validation accuracy (what the sweep's objective judged) and test accuracy."""
    params = project_params(project)
    table = SplitTable.open(project / "data" / "clean.parquet", project / "data" / "split.parquet", params.data)
    result, config, _ = train.run(table, params.data, params.train, progress=False)
    test = evaluate(result.model, *device_tensors(table.split_rows("test")), config.n_classes)
    return result.metrics["val_accuracy"], float(test["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials in the sweep (one at a time)")
    parser.add_argument("--no-pruner", action="store_true", help="every trial trains all its epochs")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sweep-transformer-") as tmp:
        work = Path(tmp)
        swept = copy_project(work / "swept", sweep_section(args.trials, not args.no_pruner), arch="transformer")
        raw = read_params(swept / "params.yaml")
        written = {key: effective_key(raw, key) for key in SPACE}
        started = time.perf_counter()
        table = sh(swept, sys.executable, "-m", "orchestration.sweep", "run")
        sweep_s = time.perf_counter() - started
        winner = swept_values(project_params(swept).train)
        defaults = copy_project(work / "defaults", {"enabled": False}, arch="transformer")
        default_values = swept_values(project_params(defaults).train)
        started = time.perf_counter()
        val_winner, test_winner = scores(swept)
        val_default, test_default = scores(defaults)
        score_s = time.perf_counter() - started
    print(f"{os.cpu_count()} cores, load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print("swept keys written to: " + ", ".join(f"{key} -> {where}" for key, where in written.items()))
    print(table.rstrip())
    pruner = "off" if args.no_pruner else "as params.yaml has it"
    print(
        f"{args.trials} trials, 1 at a time, pruner {pruner}: {sweep_s:.1f} s; both retrained and scored in {score_s:.1f} s"
    )
    print(f"winner   {json.dumps(winner)}: val accuracy {val_winner:.4f}, test accuracy {test_winner:.4f}")
    print(f"defaults {json.dumps(default_values)}: val accuracy {val_default:.4f}, test accuracy {test_default:.4f}")
    print(f"winner - defaults, test accuracy: {test_winner - test_default:+.4f}")


if __name__ == "__main__":
    main()

"""Differentially private training on the embedded digits: test accuracy at several epsilons
against the non-private run, and the training-time ratio, all measured in the same run.

It runs what the pipeline runs, in process: the embed stage's digits table, the split stage's
stratified split, the train stage's core with params.yaml's `train` section, once without privacy
(the baseline) and once per epsilon with `train.privacy` on (everything else unchanged, unless
`--epochs`/`--batch-size`/`--lr` say otherwise for every run alike), then the accuracy of the kept
weights on the test split. Prints a Markdown table (the one in docs/benchmarks.md).

    python bench/privacy.py [--epsilons 1 3 8] [--repeats 1] [--epochs N] [--batch-size N] [--lr X] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.compute import device_tensors  # noqa: E402
from pipeline.params import Params, load_params  # noqa: E402
from pipeline.rows import SplitTable  # noqa: E402
from pipeline.training import evaluate  # noqa: E402
from stages import embed, train  # noqa: E402
from stages.split import split_stratified  # noqa: E402


def params_for(params: Params, epsilon: float | None, overrides: dict[str, Any]) -> Params:
    raw = params.model_dump(mode="json")
    raw["train"] |= {k: v for k, v in overrides.items() if k != "lr" and v is not None}
    if overrides.get("lr") is not None:
        raw["train"]["optimizer"]["lr"] = overrides["lr"]
    raw["train"]["privacy"] |= {"enabled": epsilon is not None, "target_epsilon": epsilon or 1.0}
    return Params.model_validate(raw)


def measure(table: Any, params: Params) -> tuple[float, float, float | None, int]:
    """(test accuracy, training seconds, epsilon spent or None, epochs run)."""
    assignment = split_stratified(table[params.data.label].to_numpy(), params.split)
    split_table = SplitTable.of(table, assignment, params.data)
    start = time.perf_counter()
    result, config, _ = train.run(split_table, params.data, params.train, progress=False)
    seconds = time.perf_counter() - start
    test = device_tensors(split_table.split_rows("test"))
    accuracy = evaluate(result.model, *test, config.n_classes)["accuracy"]
    spent = None if result.privacy is None else result.privacy["epsilon"]
    return accuracy, seconds, spent, len(result.history)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 3.0, 8.0])
    p.add_argument("--repeats", type=int, default=1, help="runs per setting; the median time is kept")
    p.add_argument("--epochs", type=int, help="train.epochs for every run (default: params.yaml's)")
    p.add_argument("--batch-size", type=int, help="train.batch_size for every run (default: params.yaml's)")
    p.add_argument("--lr", type=float, help="train.optimizer.lr for every run (default: params.yaml's)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on shared cores)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    table = embed.run(params.embed, params.data)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, arch {params.train.model.arch}, "
        f"overrides {overrides}"
    )
    print("| training | epsilon spent | test accuracy | epochs run | seconds | time vs non-private | per epoch |")
    print("|---|---|---|---|---|---|---|")
    baseline = per_epoch = None
    for epsilon in [None, *args.epsilons]:
        runs = [measure(table, params_for(params, epsilon, overrides)) for _ in range(args.repeats)]
        accuracy, _, spent, epochs = runs[0]  # same seed: the same model every repeat
        seconds = statistics.median(r[1] for r in runs)
        baseline = seconds if baseline is None else baseline
        per_epoch = seconds / epochs if per_epoch is None else per_epoch  # early stopping varies the epochs
        name = "non-private" if epsilon is None else f"DP-SGD, target epsilon {epsilon:g}"
        shown = "-" if spent is None else f"{spent:.2f}"
        print(
            f"| {name} | {shown} | {accuracy:.4f} | {epochs} | {seconds:.1f} | {seconds / baseline:.2f} "
            f"| {seconds / epochs / per_epoch:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

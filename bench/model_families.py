"""Each model family on the embedded digits and on a tabular set: test accuracy and training time.

For every family (`train.model.arch`) and data set, this runs what the pipeline runs, in process:
the embed stage's table (digits: 8x8 images; breast_cancer: 30 tabular features, 2 classes), the
split stage's stratified split (`split` in params.yaml), the train stage's core with params.yaml's
`train` section (only the arch changed), then the accuracy of the kept weights on the test split.
Prints a Markdown table (the one in docs/benchmarks.md).

    python bench/model_families.py [--archs cnn mlp rnn transformer] [--datasets digits breast_cancer]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.compute import device_tensors  # noqa: E402
from pipeline.params import Params, load_params  # noqa: E402
from pipeline.rows import SplitTable  # noqa: E402
from pipeline.training import evaluate  # noqa: E402
from stages import embed, train  # noqa: E402
from stages.split import split_stratified  # noqa: E402

TABULAR = {"feature_prefix": "", "image_shape": None, "value_range": None, "classes": [0, 1]}


def params_for(params: Params, arch: str, dataset: str) -> Params:
    raw = params.model_dump(mode="json")
    raw["train"]["model"]["arch"] = arch
    raw["embed"]["dataset"] = dataset
    if dataset != "digits":
        raw["data"] |= TABULAR
    return Params.model_validate(raw)


def measure(params: Params) -> tuple[float, float, int]:
    """(test accuracy, training seconds, epochs run) of one family on one data set."""
    table = embed.run(params.embed, params.data)
    assignment = split_stratified(table[params.data.label].to_numpy(), params.split)
    split_table = SplitTable.of(table, assignment, params.data)
    start = time.perf_counter()
    result, config, _ = train.run(split_table, params.data, params.train, progress=False)
    seconds = time.perf_counter() - start
    test = device_tensors(split_table.split_rows("test"))
    return evaluate(result.model, *test, config.n_classes)["accuracy"], seconds, len(result.history)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--archs", nargs="+", default=["cnn", "mlp", "rnn", "transformer"])
    p.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer"])
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {params.train.device}")
    print("| family | data set | test accuracy | training seconds (epochs) |")
    print("|---|---|---|---|")
    for arch in args.archs:
        for dataset in args.datasets:
            if arch == "cnn" and dataset != "digits":
                print(f"| {arch} | {dataset} | n/a (needs images) | |", flush=True)
                continue
            accuracy, seconds, epochs = measure(params_for(params, arch, dataset))
            print(f"| {arch} | {dataset} | {accuracy:.4f} | {seconds:.1f} ({epochs}) |", flush=True)


if __name__ == "__main__":
    main()

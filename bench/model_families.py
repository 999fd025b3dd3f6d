"""Each model family on the embedded digits and on a tabular set: test accuracy and training time.

For every family (`train.model.arch`) and data set, this runs what the pipeline runs, in process:
the embed stage's table (digits: 8x8 images; breast_cancer: 30 tabular features, 2 classes), the
split stage's stratified split (`split` in params.yaml), the train stage's core with params.yaml's
`train` section (only the arch changed, so each family's defaults in `train.families` apply; with
`--shared` they are left out: every family on the shared keys), then the accuracy and macro F1 of
the kept weights on the test split. Prints a Markdown table (the one in docs/benchmarks.md).

    python bench/model_families.py [--archs cnn mlp rnn transformer] [--datasets digits breast_cancer] [--shared]
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.compute import device_tensors  # noqa: E402
from pipeline.params import Params, parse_params, read_params  # noqa: E402
from pipeline.rows import SplitTable  # noqa: E402
from pipeline.training import evaluate  # noqa: E402
from stages import embed, train  # noqa: E402
from stages.split import split_stratified  # noqa: E402

TABULAR = {"feature_prefix": "", "image_shape": None, "value_range": None, "classes": [0, 1]}


def params_for(raw: dict, arch: str, dataset: str, shared: bool = False) -> Params:
    """params.yaml as written with another arch (and data set): the family's defaults apply."""
    raw = copy.deepcopy(raw)
    raw["train"]["model"]["arch"] = arch
    if shared:
        raw["train"].pop("families", None)
    raw["embed"]["dataset"] = dataset
    if dataset != "digits":
        raw["data"] |= TABULAR
    return parse_params(raw)


def measure(params: Params) -> tuple[dict[str, float], float, int]:
    """(test scores, training seconds, epochs run) of one family on one data set."""
    table = embed.run(params.embed, params.data)
    assignment = split_stratified(table[params.data.label].to_numpy(), params.split)
    split_table = SplitTable.of(table, assignment, params.data)
    start = time.perf_counter()
    result, config, _ = train.run(split_table, params.data, params.train, progress=False)
    seconds = time.perf_counter() - start
    test = device_tensors(split_table.split_rows("test"))
    return evaluate(result.model, *test, config.n_classes), seconds, len(result.history)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--archs", nargs="+", default=["cnn", "mlp", "rnn", "transformer"])
    p.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer"])
    p.add_argument("--shared", action="store_true", help="every family on the shared train keys (no train.families)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raw = read_params(args.params)
    device = parse_params(raw).train.device
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}, shared only: {args.shared}"
    )
    print("| family | data set | test accuracy | test macro F1 | training seconds (epochs) |")
    print("|---|---|---|---|---|")
    for arch in args.archs:
        for dataset in args.datasets:
            if arch == "cnn" and dataset != "digits":
                print(f"| {arch} | {dataset} | n/a (needs images) | | |", flush=True)
                continue
            scores, seconds, epochs = measure(params_for(raw, arch, dataset, args.shared))
            accuracy, f1 = scores["accuracy"], scores["f1_macro"]
            print(f"| {arch} | {dataset} | {accuracy:.4f} | {f1:.4f} | {seconds:.1f} ({epochs}) |", flush=True)


if __name__ == "__main__":
    main()

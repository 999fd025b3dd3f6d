"""A training run of `pipeline.training.fit` for the DDP tests, started by torchrun as a script:

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/stages/ddp_fit.py \\
        --train '{"epochs": 4}' --checkpoint ck.pt --out weights.pt [--crash-after 1]

Every process trains on the same tiny digits table; rank 0 writes the final weights (and the
history) to --out. --crash-after E makes rank 0 raise after epoch E (a crash mid-training: torchrun
then stops the other process too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import tiny_image_table  # noqa: E402

from pipeline import distributed  # noqa: E402
from pipeline.models import config_for  # noqa: E402
from pipeline.params import parse_params  # noqa: E402
from pipeline.rows import SplitTable  # noqa: E402
from pipeline.training import fit  # noqa: E402
from stages.split import split_stratified  # noqa: E402


class Crash(RuntimeError):
    pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--train", default="{}", help="JSON: train params over params.yaml's")
    p.add_argument("--checkpoint")
    p.add_argument("--out", required=True)
    p.add_argument("--crash-after", type=int)
    args = p.parse_args()

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"] = {**raw["train"], **json.loads(args.train)}
    params = parse_params(raw)
    table = tiny_image_table()
    split_table = SplitTable.of(table, split_stratified(table["label"].to_numpy(), params.split), params.data)
    parts = split_table.rows(train=split_table.splits == "train", val=split_table.splits == "val")
    config = config_for(params.train.model, params.data, split_table.n_features)

    def crash(epoch: int, row: dict) -> None:
        if epoch == args.crash_after:
            raise Crash(f"injected crash after epoch {epoch}")

    with distributed.session(params.train.device) as world:
        hook = crash if args.crash_after is not None else None
        result = fit(
            config,
            parts["train"],
            parts["val"],
            params.train,
            params.data,
            args.checkpoint,
            hook,
        )
        if world.main:
            torch.save(
                {
                    "state": result.model.state_dict(),
                    "history": result.history,
                    "world": world.size,
                    "resumed_from": result.resumed_from,
                },
                args.out,
            )


if __name__ == "__main__":
    main()

"""params.yaml with a tiny cnn trained for a few epochs on the CPU: what the training tests share."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.params import Params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def raw_params(**train_overrides) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = {
        "epochs": 4,
        "batch_size": 16,
        "model": {**raw["train"]["model"], "channels": [8], "hidden": [32], "dropout": 0.1},
        "optimizer": {**raw["train"]["optimizer"], "lr": 0.01},
        "early_stopping": {"metric": "val_accuracy", "patience": 50},
        "device": "cpu",
        "checkpoint_interval_s": 0.0,  # a checkpoint after every epoch
        "families": {},  # these tiny sizes whichever train.model.arch a test picks
    }
    raw["train"] = {**raw["train"], **tiny, **train_overrides}
    return raw


def tiny_params(**train_overrides) -> Params:
    return parse_params(raw_params(**train_overrides))

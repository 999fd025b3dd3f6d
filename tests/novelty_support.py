"""A small exported candidate with the novelty output, for the export and serving tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from conftest import tiny_image_table

from pipeline import atomic, autoencoder
from pipeline.models import CNNConfig, build_model
from pipeline.params import Params
from pipeline.rows import Rows, SplitTable
from pipeline.scaling import input_scale


def assignment_for(table: pd.DataFrame) -> pd.DataFrame:
    """Every third row is a test row, every third after it a val row, the rest train."""
    rows = np.arange(len(table))
    split = np.select([rows % 3 == 0, rows % 3 == 1], ["test", "val"], "train")
    return pd.DataFrame({"row": rows, "split": pd.Categorical(split, ["train", "val", "test"]), "fold": -1})


def parts(table: pd.DataFrame, params: Params) -> dict[str, Rows]:
    split = SplitTable.of(table, assignment_for(table), params.data)
    return {name: split.split_rows(name) for name in ("train", "val", "test")}


def classifier(params: Params) -> tuple[torch.nn.Module, dict]:
    """An untrained small CNN: parity does not need a good model."""
    config = CNNConfig(64, params.data.classes, params.data.image_shape, 0.1, channels=[4, 8], hidden=[16])
    torch.manual_seed(0)
    model = build_model(config)
    model.scale.factor.fill_(1 / 16)
    return model.eval(), {"config": config, "metrics": {"val_accuracy": 0.5}, "params": {"seed": 123}}


def detector(rows: Rows, params: Params, epochs: int = 10, **changes) -> tuple[autoencoder.Autoencoder, float]:
    """An autoencoder of `novelty:` (with `changes`) fitted on `rows`, its threshold on them too."""
    novelty = params.novelty.model_copy(update={"enabled": True, "epochs": epochs, **changes})
    config = autoencoder.AutoencoderConfig.of(novelty, params.data, rows.x.shape[1])
    offset, factor = input_scale(rows.x, params.data)
    fitted = autoencoder.fit(config, rows.x, novelty, offset, factor)
    threshold = float(np.quantile(autoencoder.errors(fitted.model, rows.x), novelty.quantile))
    return fitted.model, threshold


def export_with_novelty(
    out: Path, params: Params, export_params=None, **novelty_changes
) -> tuple[dict, dict[str, Rows], tuple]:
    """Export a tiny classifier + autoencoder into `out`; returns (card, split rows, (model, detector, threshold))."""
    from stages import export

    table = tiny_image_table()
    rows = parts(table, params)
    model, model_file = classifier(params)
    ae, threshold = detector(rows["train"], params, **novelty_changes)
    hashes = {"clean": {"path": "c", "md5": "0" * 32}, "split": {"path": "s", "md5": "1" * 32}}
    with atomic.atomic_dir(out) as tmp:
        Path(tmp).chmod(0o755)
        card = export.run(
            model,
            model_file,
            rows["test"],
            params.data,
            export_params or params.export,
            Path(tmp),
            hashes,
            (ae, threshold),
        )
    return card.to_json(), rows, (model, ae, threshold)

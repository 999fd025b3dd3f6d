"""`dvc repro` end to end on a mixed table a user brings as CSV: text label, two text columns,
numbers with gaps, under the `indicator` policy; the candidate takes raw rows."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from mixed_data import SPECIES, mixed_table
from support import copy_project, edit_params
from test_pipeline_repro import ran, sh

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_repro_of_a_mixed_csv_table(tmp_path):
    repo = copy_project(tmp_path / "project")
    (repo / "raw").mkdir()
    mixed_table(n=300).to_csv(repo / "raw" / "penguins.csv", index=False)
    edit_params(
        repo,
        data__source="raw/penguins.csv",
        data__label="species",
        data__feature_prefix="",
        data__image_shape=None,
        data__value_range=None,
        data__classes=SPECIES,
        data__missing="indicator",
        data__columns={"island": {"categories": ["Biscoe", "Dream", "Torgersen"]}},
        train__epochs=6,
        train__model__arch="mlp",
        split__folds=[0, 1],
        export__model_name="penguins",
        gate__floors={"accuracy": 0.8},
    )
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "penguins")
    result = sh(repo, "dvc", "repro")
    assert {"clean", "split", "train", "crossval@0", "crossval@1", "export", "evaluate"} <= ran(result)

    metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert metrics["accuracy"] > 0.8
    assert "Columns (data contract)" in (repo / "reports" / "clean.html").read_text()
    card = json.loads((repo / "models" / "candidate" / "model_card.json").read_text())
    assert [i["datatype"] for i in card["inputs"]] == ["FP32", "BYTES"]
    session = ort.InferenceSession(str(repo / "models" / "candidate" / "model.onnx"))
    (out,) = session.run(
        ["probabilities"],
        {
            "numeric": np.array([[np.nan, 18.0, 195.0, 3800.0, 2008.0]], np.float32),
            "categorical": np.array([["Dream", ""]]),
        },
    )
    assert np.isfinite(out).all()
    assert pd.read_parquet(repo / "data" / "clean.parquet")["island"].dtype == object

"""`dvc repro` end to end on a mixed table a user brings as CSV: text label, two text columns,
numbers with gaps, under each missing-value policy in turn (one copy of the project: switching
`data.missing` reruns clean and everything after it); the candidate takes raw rows.

Sized for `make test`: 240 rows, a few epochs, and only the stages up to evaluate
(`dvc repro evaluate`: clean, split, train, export, evaluate); the folds, drift and explanations
read the same tables and are covered on the digits pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from mixed_data import GAPPY, SPECIES, mixed_table
from support import copy_project, edit_params
from test_pipeline_repro import ran, sh

pytestmark = pytest.mark.integration

ROWS = 240
GAP_SHARE = 0.012  # about 3 rows of each gappy column: under quarantine, within clean.max_quarantine_share


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("mixed-project"))
    (repo / "raw").mkdir()
    mixed_table(n=ROWS, gaps=GAP_SHARE).to_csv(repo / "raw" / "penguins.csv", index=False)
    edit_params(
        repo,
        data__source="raw/penguins.csv",
        data__label="species",
        data__feature_prefix="",
        data__image_shape=None,
        data__value_range=None,
        data__classes=SPECIES,
        data__columns={"island": {"categories": ["Biscoe", "Dream", "Torgersen"]}},
        train__epochs=6,
        train__model__arch="mlp",
        train__families={},  # the 6 epochs above, not the mlp family's defaults
        split__folds=[0, 1],
        export__model_name="penguins",
        gate__floors={"accuracy": 0.8},
    )
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "penguins")
    return repo


# in this order on the one copy: each switch reruns clean and what follows it
@pytest.mark.parametrize("policy", ["indicator", "impute", "quarantine"])
def test_repro_of_a_mixed_csv_table(repo: Path, policy: str) -> None:
    edit_params(repo, data__missing=policy)
    result = sh(repo, "dvc", "repro", "evaluate")
    # (split reruns only when clean's rows change: not between impute and indicator)
    assert {"clean", "train", "export", "evaluate"} <= ran(result), result.stdout

    metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert metrics["accuracy"] > 0.8, metrics
    assert "Columns (data contract)" in (repo / "reports" / "clean.html").read_text()
    cleaned = json.loads((repo / "metrics" / "clean.json").read_text())
    clean = pd.read_parquet(repo / "data" / "clean.parquet")
    gaps = int(mixed_table(n=ROWS, gaps=GAP_SHARE)[list(GAPPY)].isna().any(axis=1).sum())
    assert gaps > 0
    if policy == "quarantine":  # each row with a gap goes, named by its column
        assert cleaned["rows_quarantined"] == gaps and len(clean) == ROWS - gaps, cleaned
        reasons = pd.read_parquet(repo / "data" / "quarantine.parquet")["reason"]
        assert all(any(column in reason for column in GAPPY) for reason in reasons), reasons.tolist()
        assert not clean[list(GAPPY)].isna().any().any()
    else:  # the gaps stay, filled by the model's own transform
        assert cleaned["rows_quarantined"] == 0 and len(clean) == ROWS, cleaned
    assert clean["island"].dtype == object

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
    assert out.shape == (1, len(SPECIES))
    # a gap in a row the model serves: filled under impute and indicator, as the transform learned
    assert np.isfinite(out).all() or policy == "quarantine", out

"""A mixed table (numbers with gaps, two text columns, a text label) through clean, split, train,
crossval, export and evaluate: the contract and its missing-value policies, the transform fitted
on training rows only, and the served graph taking raw rows (numbers and category strings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
import yaml
from mixed_data import GAPPY, data_section, mixed_table

from pipeline import atomic, transform
from pipeline.candidate import GoldenSamples
from pipeline.models import load_model
from pipeline.params import CleanParams, Params, parse_params
from pipeline.rows import Rows, SplitTable
from pipeline.transform import RawRows
from pipeline.transform_onnx import feeds
from stages import clean, crossval, evaluate, export, train
from stages.split import split_stratified

ROOT = Path(__file__).resolve().parents[2]
LENIENT = CleanParams(min_rows=10, max_quarantine_share=0.5, max_duplicate_share=0.5)


def mixed_params(missing: str = "quarantine", columns: dict | None = None, epochs: int = 8) -> Params:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"] = data_section(missing, columns, "raw/penguins.csv")
    raw["train"] |= {"epochs": epochs, "batch_size": 32, "device": "cpu"}
    raw["train"]["model"] = {"arch": "mlp", "hidden": [32], "dropout": 0.0}
    raw["train"]["families"] = {}  # the small mlp above, not the mlp family's defaults
    raw["split"]["folds"] = [0, 1]
    raw["export"]["model_name"] = "penguins"
    return parse_params(raw)


# --- the contract in clean -------------------------------------------------------------------


def test_quarantine_policy_quarantines_gaps_naming_the_column():
    result = clean.run(mixed_table(), mixed_params("quarantine").data, LENIENT, batch_rows=50)
    reasons = result.quarantine["reason"].tolist()
    assert result.metrics["rows_quarantined"] == len(reasons) > 0
    assert any(r.startswith("missing feature value: bill_length_mm=nan") for r in reasons)
    assert "missing feature value: sex is empty" in reasons
    assert not result.clean[list(GAPPY)].isna().any().any()
    # The column types were inferred (text = categorical) and the report says so, column by column.
    assert result.metrics["categorical_features"] == 2
    assert "Columns (data contract)" in result.report_html
    assert "<td>island</td><td>categorical</td><td>inferred</td><td>quarantine</td>" in result.report_html
    assert "<td>year</td><td>numeric</td><td>inferred</td>" in result.report_html


@pytest.mark.parametrize("policy", ["impute", "indicator"])
def test_filling_policies_keep_rows_with_gaps(policy):
    table = mixed_table()
    result = clean.run(table, mixed_params(policy).data, LENIENT, batch_rows=50)
    assert result.metrics["rows_quarantined"] == 0 and len(result.clean) == len(table)
    assert result.clean["sex"].isna().sum() == table["sex"].isna().sum() > 0  # gaps are kept for the transform
    assert f"<td>{policy}</td>" in result.report_html


def test_undeclared_category_is_quarantined_naming_column_and_value():
    table = mixed_table()
    table.loc[7, "island"] = "Atlantis"
    params = mixed_params("impute", {"island": {"categories": ["Biscoe", "Dream", "Torgersen"]}})
    result = clean.run(table, params.data, LENIENT, batch_rows=50)
    assert result.quarantine["row"].tolist() == [7]
    assert result.quarantine["reason"].tolist() == [
        "undeclared category: island='Atlantis' (not in data.columns.island.categories)"
    ]
    assert result.metrics["reasons"] == {"undeclared category": 1}
    assert "categories:island" in result.report_html  # the GX check, with its example value
    assert "Atlantis" in result.report_html


def test_a_column_declared_numeric_that_holds_text_fails_naming_it():
    params = mixed_params("impute", {"island": {"type": "numeric"}})
    with pytest.raises(clean.ValidationFailed, match=r"non-numeric feature column\(s\) \['island'\]"):
        clean.run(mixed_table(), params.data, LENIENT)


def test_a_contract_naming_a_column_the_table_lacks_fails():
    params = mixed_params("impute", {"islnd": {"type": "categorical"}})
    with pytest.raises(clean.ValidationFailed, match=r"data.columns names \['islnd'\]"):
        clean.run(mixed_table(), params.data, LENIENT)


def test_csv_text_columns_stream_as_categories(tmp_path):
    raw = tmp_path / "penguins.csv"
    mixed_table().to_csv(raw, index=False)
    params = mixed_params("indicator")
    out, quarantine = tmp_path / "clean.parquet", tmp_path / "quarantine.parquet"
    metrics, _ = clean.run_source(str(raw), params.data, LENIENT, params.engine, str(out), str(quarantine))
    kept = pd.read_parquet(out)
    assert metrics["rows_quarantined"] == 0 and metrics["categorical_features"] == 2
    # A CSV gap in a text column reads as an empty string: a gap to the transform, as None is.
    assert kept["island"].dtype == object and (kept["sex"].isna() | (kept["sex"] == "")).any()


# --- the transform: fitted on training rows only ----------------------------------------------


def split_of(table: pd.DataFrame, params: Params) -> SplitTable:
    return SplitTable.of(table, split_stratified(table["species"].to_numpy(), params.split), params.data)


def test_the_transform_sees_only_training_rows():
    params = mixed_params("indicator")
    table = clean.run(mixed_table(), params.data, LENIENT).clean
    split = split_of(table, params)
    test_rows = np.flatnonzero(split.splits == "test")
    table.loc[test_rows[:3], "island"] = "Atlantis"  # a category only the test split has
    table.loc[test_rows, "body_mass_g"] = 1e6  # would move the median if the test rows were used
    split = split_of(table, params)
    parts, fitted = split.fitted_rows("train", train=split.splits == "train", test=split.splits == "test")

    training = table.iloc[np.flatnonzero(split.splits == "train")]
    island = next(c for c in fitted["categorical"] if c["name"] == "island")
    mass = next(c for c in fitted["numeric"] if c["name"] == "body_mass_g")
    assert (
        island["vocabulary"] == sorted(training["island"].dropna().unique()) and "Atlantis" not in island["vocabulary"]
    )
    assert mass["fill"] == pytest.approx(training["body_mass_g"].median())
    assert island["fill"] == training["island"].mode().iloc[0]
    # The planted rows land in island's reserved unknown slot.
    names = transform.feature_names(fitted)
    unknown = names.index(f"island={transform.UNKNOWN}")
    planted = np.flatnonzero(table.iloc[test_rows]["island"].to_numpy() == "Atlantis")
    assert (parts["test"].x[planted, unknown] == 1).all()
    assert parts["test"].x.shape[1] == len(names) == parts["train"].x.shape[1]


def test_crossval_fits_the_transform_on_the_folds_training_rows(monkeypatch):
    params = mixed_params("impute", epochs=2)
    table = clean.run(mixed_table(), params.data, LENIENT).clean
    split = split_of(table, params)
    seen = []
    fit = transform.fit
    monkeypatch.setattr(transform, "fit", lambda rows, contracts: seen.append(len(rows)) or fit(rows, contracts))
    scores = crossval.run(split, params.data, params.train, params.split, 1)
    outside_fold = int(((split.splits == "train") & (split.folds != 1)).sum())
    assert seen == [outside_fold] and scores["rows"] == int((split.folds == 1).sum())


# --- train, export, evaluate on raw rows ---------------------------------------------------------


def train_for(policy: str) -> tuple[SplitTable, train.TrainResult, Params]:
    params = mixed_params(policy)
    table = clean.run(mixed_table(), params.data, LENIENT).clean
    split = split_of(table, params)
    return split, train.run(split, params.data, params.train), params


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[SplitTable, train.TrainResult, Params]]:
    return {policy: train_for(policy) for policy in ("quarantine", "impute", "indicator")}


@pytest.fixture(scope="module")
def candidate(trained, tmp_path_factory) -> Path:
    """The indicator model (every kind of encoded feature) exported through the export stage's core."""
    split, (result, config, fitted), params = trained["indicator"]
    out = tmp_path_factory.mktemp("mixed") / "candidate"
    model_path = out.parent / "model.pt"
    from pipeline.models import save_model

    save_model(model_path, result.model, config, metrics=result.metrics, params={}, transform=fitted)
    model, model_file = load_model(model_path)  # weights_only=True, transform included
    raw = split.raw_rows(test=split.splits == "test")["test"]
    test = Rows(transform.encode(transform.check(model_file["transform"]), raw), raw.y)
    hashes = {"clean": {"path": "c", "md5": "0" * 32}, "split": {"path": "s", "md5": "1" * 32}}
    with atomic.atomic_dir(out) as tmp:
        Path(tmp).chmod(0o755)
        export.run(model, model_file, test, params.data, params.export, Path(tmp), hashes, raw=raw)
    return out


@pytest.mark.parametrize("policy", ["quarantine", "impute", "indicator"])
def test_every_policy_trains_a_useful_model(trained, policy):
    split, (result, config, fitted), _ = trained[policy]
    assert fitted is not None and config.n_features == transform.width(fitted)
    parts, _ = split.fitted_rows("train", train=split.splits == "train", test=split.splits == "test")
    with torch.no_grad():
        predicted = result.model(torch.from_numpy(parts["test"].float32())).argmax(1).numpy()
    assert (predicted == parts["test"].y).mean() > 0.8


def test_the_model_file_keeps_the_transform_as_plain_data(trained, tmp_path):
    from pipeline.models import save_model

    _, (result, config, fitted), _ = trained["impute"]
    save_model(tmp_path / "m.pt", result.model, config, transform=fitted)
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert blob["transform"] == fitted


def test_the_served_graph_takes_raw_rows_with_parity(candidate, trained):
    split, (result, _, fitted), _ = trained["indicator"]
    card = json.loads((candidate / "model_card.json").read_text())
    assert card["inputs"] == [
        {"name": "numeric", "shape": [-1, 5], "datatype": "FP32"},
        {"name": "categorical", "shape": [-1, 2], "datatype": "BYTES"},
    ]
    assert card["transform"]["features"] == transform.feature_names(fitted)
    assert set(card["parity"]["max_abs_diff"]) == {"onnx"} and not (candidate / "model.ts").exists()
    config = (candidate / "triton/penguins/config.pbtxt").read_text()
    assert "TYPE_STRING" in config and "TYPE_FP32" in config
    assert not (candidate / "gpu/penguins_torchscript").exists()

    # Independently of export's own check: torch on the numpy transform = onnxruntime on raw rows.
    raw = split.raw_rows(test=split.splits == "test")["test"]
    session = ort.InferenceSession(str(candidate / "model.onnx"), providers=["CPUExecutionProvider"])
    (served,) = session.run(["probabilities"], feeds(raw))
    with torch.no_grad():
        expected = torch.softmax(result.model(torch.from_numpy(transform.encode(fitted, raw))), 1).numpy()
    assert np.abs(served - expected).max() < 1e-4


def test_an_unknown_category_and_missing_values_get_an_answer(candidate, trained):
    _, (result, _, fitted), _ = trained["indicator"]
    numeric = np.array([[45.0, np.nan, 200.0, np.nan, 2008.0], [np.nan] * 5], np.float32)
    categorical = np.array([["Atlantis", ""], ["", "unknown-sex"]], object)
    session = ort.InferenceSession(str(candidate / "model.onnx"), providers=["CPUExecutionProvider"])
    (served,) = session.run(["probabilities"], {"numeric": numeric, "categorical": categorical.astype(str)})
    assert np.isfinite(served).all() and np.allclose(served.sum(1), 1, atol=1e-5)
    rows = RawRows(numeric, np.where(categorical == "", None, categorical), np.zeros(2, np.int64))
    with torch.no_grad():
        expected = torch.softmax(result.model(torch.from_numpy(transform.encode(fitted, rows))), 1).numpy()
    assert np.abs(served - expected).max() < 1e-4


def test_evaluate_scores_the_served_graph_on_raw_test_rows(candidate, trained):
    split, _, params = trained["indicator"]
    evaluation = evaluate.run(candidate, evaluate.test_rows(split), params.data)
    assert evaluation.metrics["test_rows"] == int((split.splits == "test").sum())
    assert evaluation.metrics["accuracy"] > 0.8


@pytest.mark.triton
def test_triton_serves_the_mixed_model_from_raw_rows(candidate, tmp_path):
    from support import local_triton

    from serving.client import ClientSettings, TritonClient
    from serving.loading import golden_inputs
    from serving.push import push_candidate
    from serving.settings import ServingSettings

    golden = json.loads((candidate / "golden.json").read_text())
    assert golden["input_datatypes"] == {"numeric": "FP32", "categorical": "BYTES"}
    odd = {
        "numeric": np.array([[45.0, np.nan, 200.0, np.nan, 2008.0]], np.float32),
        "categorical": np.array([["Atlantis", ""]], str),
    }
    session = ort.InferenceSession(str(candidate / "model.onnx"), providers=["CPUExecutionProvider"])
    with local_triton(tmp_path / "triton") as server:
        client = ClientSettings.local(server, timeout_s=30.0, retries=1, backoff_s=0.1)
        settings = ServingSettings(client=client, repository=server.repository, load_timeout_s=60.0, retention=3)
        result = push_candidate(candidate, settings)  # smoke-tests the golden mixed rows under a staging name
        assert (result.status, result.serving) == ("pushed", 1)
        with TritonClient(settings.client) as triton:
            served = triton.predict("penguins", golden_inputs(GoldenSamples.model_validate(golden)))
            unusual = triton.predict("penguins", odd)
    assert np.abs(served - np.asarray(golden["outputs"])).max() <= golden["atol"]
    (expected,) = session.run(["probabilities"], odd)
    assert np.abs(unusual - expected).max() < 1e-4

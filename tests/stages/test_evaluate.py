"""evaluate: metrics equal sklearn's on known predictions, and they come from the ONNX file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from project_imports import ROOT, project_modules
from sklearn.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

from pipeline import atomic
from pipeline.models import MLPConfig, build_model
from pipeline.rows import Rows, SplitTable
from pipeline.tables import write_parquet
from stages import _cli, evaluate, export


def assignment_for(table: pd.DataFrame) -> pd.DataFrame:
    rows = np.arange(len(table))
    split = np.where(rows % 3 == 0, "test", "train")
    return pd.DataFrame({"row": rows, "split": pd.Categorical(split, ["train", "val", "test"]), "fold": -1})


class Fixed(torch.nn.Module):
    """A "model" whose logits are the first n_classes raw features: predictions are chosen by hand."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.n_classes] * 10.0


class Always(torch.nn.Module):
    """Logits that favour one class whatever the row."""

    def __init__(self, label: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("bias", torch.nn.functional.one_hot(torch.tensor(label), n_classes).float() * 5.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * 0.0 + self.bias  # keeps the batch axis of the input


def export_candidate(out: Path, model: torch.nn.Module, table: pd.DataFrame, params) -> Rows:
    config = MLPConfig(64, params.data.classes, None, 0.0, hidden=[8])
    test = SplitTable.of(table, assignment_for(table), params.data).split_rows("test")
    hashes = {"clean": {"path": "c", "md5": "0" * 32}, "split": {"path": "s", "md5": "1" * 32}}
    with atomic.atomic_dir(out) as tmp:
        export.run(model, {"config": config, "params": None}, test, params.data, params.export, Path(tmp), hashes)
    return test


def test_score_matches_sklearn():
    classes = ["cat", "dog", "emu"]
    actual = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 1, 0, 1, 1, 2, 0, 2, 1])
    result = evaluate.score(actual, predicted, classes)

    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(actual, predicted)) == pytest.approx(6 / 9)
    assert result.metrics["precision_macro"] == pytest.approx(precision_score(actual, predicted, average="macro"))
    assert result.metrics["recall_macro"] == pytest.approx(recall_score(actual, predicted, average="macro"))
    assert result.metrics["f1_macro"] == pytest.approx(f1_score(actual, predicted, average="macro"))
    assert result.metrics["test_rows"] == 9
    expected = classification_report(actual, predicted, target_names=classes, output_dict=True)
    for name in classes:
        for ours, theirs in (
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "f1-score"),
            ("support", "support"),
        ):
            assert result.report[name][ours] == pytest.approx(expected[name][theirs])
    assert result.confusion.columns.tolist() == ["actual", "predicted"]
    assert result.confusion.iloc[1].tolist() == ["cat", "dog"]
    assert len(result.confusion) == 9


def test_absent_class_scores_zero_not_an_error():
    result = evaluate.score(np.array([0, 0, 1]), np.array([0, 0, 1]), [0, 1, 2])
    assert result.report["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_scores_the_onnx_file_not_the_model(tmp_path, image_table, params):
    """The candidate's model.onnx decides the metrics: swapping the file changes them."""
    table = image_table.copy()
    features = [c for c in table.columns if c.startswith("px_")]
    table[features] = 0
    truth = table["label"].to_numpy()
    # Rows whose label is even get a one-hot of their label in the first ten features; odd ones
    # get the one-hot of the class below, so the hand-made model is right on exactly the even half.
    guess = np.where(truth % 2 == 0, truth, truth - 1)
    table[features[:10]] = np.eye(10, dtype=np.uint8)[guess]
    out = tmp_path / "candidate"
    test = export_candidate(out, Fixed(10), table, params)

    result = evaluate.run(out, test, params.data)
    even = params.data.classes[::2]
    expected_accuracy = np.isin(truth[::3], even).mean()  # the test rows are every third row
    assert result.metrics["accuracy"] == pytest.approx(expected_accuracy)
    assert result.confusion["actual"].tolist() == [str(label) for label in truth[::3]]
    assert result.confusion["predicted"].tolist() == [str(label) for label in guess[::3]]

    # Replace only the ONNX file by one that always says class 0: the score follows the file.
    export_candidate(tmp_path / "other", Always(0, 10), table, params)
    (out / "model.onnx").write_bytes((tmp_path / "other" / "model.onnx").read_bytes())
    result = evaluate.run(out, test, params.data)
    assert result.metrics["accuracy"] == pytest.approx((truth[::3] == 0).mean())
    assert set(result.confusion["predicted"]) == {"0"}


def test_candidate_for_other_classes_is_refused(tmp_path, image_table, params):
    out = tmp_path / "candidate"
    test = export_candidate(
        out, build_model(MLPConfig(64, params.data.classes, None, 0.0, hidden=[8])), image_table, params
    )
    card = json.loads((out / "model_card.json").read_text())
    (out / "model_card.json").write_text(json.dumps({**card, "classes": list(range(1, 11))}))
    with pytest.raises(_cli.StageError, match="data.classes"):
        evaluate.run(out, test, params.data)


def test_cli_writes_metrics_report_and_confusion(tmp_path, image_table, params, project_root, monkeypatch):
    """A short chained run: export's output is read back by the evaluate CLI, as DVC runs it."""
    model = build_model(MLPConfig(64, params.data.classes, None, 0.0, hidden=[8])).eval()
    out = tmp_path / "models" / "candidate"
    test = export_candidate(out, model, image_table, params)
    write_parquet(image_table, tmp_path / "clean.parquet")
    write_parquet(assignment_for(image_table), tmp_path / "split.parquet")
    argv = ["evaluate", "--params", str(project_root / "params.yaml"), "--candidate", str(out)]
    argv += ["--clean", str(tmp_path / "clean.parquet"), "--split", str(tmp_path / "split.parquet")]
    argv += [
        "--metrics",
        str(tmp_path / "m.json"),
        "--confusion",
        str(tmp_path / "c.csv"),
        "--report",
        str(tmp_path / "r.json"),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    evaluate.main()

    metrics = json.loads((tmp_path / "m.json").read_text())
    with torch.no_grad():
        predicted = model(torch.from_numpy(test.float32())).argmax(dim=1).numpy()
    assert metrics["accuracy"] == pytest.approx((predicted == test.y).mean())
    assert set(metrics) == {"accuracy", "precision_macro", "recall_macro", "f1_macro", "test_rows"}
    report = json.loads((tmp_path / "r.json").read_text())
    assert sorted(report) == sorted(str(c) for c in params.data.classes)
    assert sum(row["support"] for row in report.values()) == len(test.y)
    confusion = pd.read_csv(tmp_path / "c.csv")
    assert confusion.columns.tolist() == ["actual", "predicted"] and len(confusion) == len(test.y)


@pytest.mark.parametrize("stage", ["stages.evaluate", "stages.gate"])
def test_evaluate_and_gate_do_not_import_torch(stage):
    """They score an ONNX file and a live server: torch has no business there. A fresh interpreter
    imports the stage and every project module it imports, lazily imported ones included."""
    modules = project_modules(stage)
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print('JSON' + json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("JSON"))
    assert json.loads(line[4:]) == [], f"importing {stage} ({len(modules)} project modules) imported torch"

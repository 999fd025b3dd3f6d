"""evaluate: score the exported ONNX model (what will be served) on the test split.

The candidate's `model.onnx` runs through onnxruntime, not the PyTorch object that produced it,
so the numbers describe the artifact a push would serve. Outputs: accuracy and macro
precision/recall/F1 (metrics JSON), precision/recall/F1/support per class (report JSON), and one
`actual,predicted` row per test sample (CSV that DVC draws as a confusion matrix).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from pipeline import atomic
from pipeline.params import Params
from pipeline.tables import read_parquet
from stages import _cli
from stages.export import CARD_FILE, ONNX_FILE, Rows, split_rows

log = logging.getLogger(__name__)

BATCH_ROWS = 4096  # rows per onnxruntime call: bounded memory on a large test split


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    report: dict[str, dict[str, float]]
    confusion: pd.DataFrame


def onnx_predict(path: Path, features: np.ndarray, input_name: str, output_name: str) -> np.ndarray:
    """Output rows of the ONNX model (probabilities) for `features`, in batches."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parts = [
        session.run([output_name], {input_name: features[start : start + BATCH_ROWS]})[0]
        for start in range(0, len(features), BATCH_ROWS)
    ]
    return np.concatenate(parts, axis=0)


def score(actual: np.ndarray, predicted: np.ndarray, classes: list) -> Evaluation:
    """Metrics, per-class report and confusion rows from class indices."""
    ids = list(range(len(classes)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        actual, predicted, labels=ids, average="macro", zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(actual, predicted)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "test_rows": len(actual),
    }
    per_class = precision_recall_fscore_support(actual, predicted, labels=ids, average=None, zero_division=0)
    report = {
        str(name): {
            "precision": float(per_class[0][i]),
            "recall": float(per_class[1][i]),
            "f1": float(per_class[2][i]),
            "support": int(per_class[3][i]),
        }
        for i, name in enumerate(classes)
    }
    names = np.array([str(name) for name in classes], dtype=object)
    confusion = pd.DataFrame({"actual": names[actual], "predicted": names[predicted]})
    return Evaluation(metrics, report, confusion)


def run(candidate: Path, test: Rows, params: Params) -> Evaluation:
    """Score `candidate/model.onnx` on the test rows (labels are indices into data.classes)."""
    card = json.loads((candidate / CARD_FILE).read_text())
    if list(card["classes"]) != list(params.data.classes):
        raise _cli.StageError(
            f"the candidate predicts classes {card['classes']}, but data.classes is {list(params.data.classes)}; "
            "re-export it"
        )
    outputs = onnx_predict(candidate / ONNX_FILE, test.features, card["inputs"][0]["name"], card["outputs"][0]["name"])
    evaluation = score(test.labels, outputs.argmax(axis=1), list(params.data.classes))
    log.info("%s on %d test rows: %s", candidate / ONNX_FILE, len(test.labels), evaluation.metrics)
    return evaluation


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--candidate", required=True, help="candidate folder written by export")
    _cli.add_split_inputs(p)
    p.add_argument("--metrics", required=True, help="JSON metrics file")
    p.add_argument("--confusion", required=True, help="CSV of actual,predicted per test row (DVC plot)")
    p.add_argument("--report", required=True, help="JSON per-class report")

    def body(args, params):
        test = split_rows(read_parquet(args.clean), read_parquet(args.split), params.data, "test")
        evaluation = run(Path(args.candidate), test, params)
        atomic.write_json(args.metrics, evaluation.metrics)
        atomic.write_json(args.report, evaluation.report)
        with atomic.atomic_path(args.confusion) as tmp:
            evaluation.confusion.to_csv(tmp, index=False)

    _cli.main("evaluate", body, p.parse_args())


if __name__ == "__main__":
    main()

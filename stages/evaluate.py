"""evaluate: score the exported ONNX model (what will be served) on the test split.

The candidate's `model.onnx` runs through onnxruntime, not the PyTorch object that produced it,
so the numbers describe the artifact a push would serve. Outputs: accuracy and macro
precision/recall/F1 (metrics JSON, `pipeline.metrics`: the same scorer and names as crossval and
the gate), precision/recall/F1/support per class (report JSON), and one `actual,predicted` row per
test sample (CSV that DVC draws as a confusion matrix). Torch-free: it reads only the test rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from pipeline import atomic, metrics
from pipeline.candidate import CARD_FILE, ONNX_FILE, read_card
from pipeline.params import DataParams
from pipeline.rows import Rows, SplitTable
from pipeline.transform import RawRows
from pipeline.transform_onnx import feeds
from stages import _cli

log = logging.getLogger(__name__)

BATCH_ROWS = 4096  # rows per onnxruntime call: bounded memory on a large test split


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    report: dict[str, dict[str, float]]
    confusion: pd.DataFrame


def onnx_predict(path: Path, rows: Rows | RawRows, input_name: str, output_name: str) -> np.ndarray:
    """Output rows of the ONNX model (probabilities) for `rows`, in float32 batches; raw rows (a
    mixed table) go in as the served model's inputs, numbers and category strings."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def batch(start: int) -> dict[str, np.ndarray]:
        if isinstance(rows, RawRows):
            return feeds(rows.take(np.arange(start, min(start + BATCH_ROWS, len(rows)))))
        return {input_name: rows.float32(start, start + BATCH_ROWS)}

    parts = [session.run([output_name], batch(start))[0] for start in range(0, len(rows), BATCH_ROWS)]
    return np.concatenate(parts, axis=0)


def score(actual: np.ndarray, predicted: np.ndarray, classes: list) -> Evaluation:
    """Metrics, per-class report and confusion rows from class indices."""
    scores = {**metrics.scores(actual, predicted, len(classes)), "test_rows": len(actual)}
    names = np.array([str(name) for name in classes], dtype=object)
    confusion = pd.DataFrame({"actual": names[actual], "predicted": names[predicted]})
    return Evaluation(scores, metrics.per_class(actual, predicted, classes), confusion)


def run(candidate: Path, test: Rows | RawRows, data: DataParams) -> Evaluation:
    """Score `candidate/model.onnx` on the test rows (labels are indices into data.classes)."""
    card = read_card(candidate / CARD_FILE)
    classes = list(data.classes)
    if list(card.classes) != classes:
        raise _cli.StageError(
            f"the candidate predicts classes {card.classes}, but data.classes is {classes}; re-export it"
        )
    outputs = onnx_predict(candidate / ONNX_FILE, test, card.inputs[0].name, card.outputs[0].name)
    evaluation = score(test.y, outputs.argmax(axis=1), classes)
    log.info("%s on %d test rows: %s", candidate / ONNX_FILE, len(test), evaluation.metrics)
    return evaluation


def test_rows(table: SplitTable) -> Rows | RawRows:
    """The test split as the served model takes it: float rows, or a mixed table's raw rows."""
    if table.mixed:
        return table.raw_rows(test=table.splits == "test")["test"]
    return table.split_rows("test")


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--candidate", required=True, help="candidate folder written by export")
    _cli.add_split_inputs(p)
    p.add_argument("--metrics", required=True, help="JSON metrics file")
    p.add_argument("--confusion", required=True, help="CSV of actual,predicted per test row (DVC plot)")
    p.add_argument("--report", required=True, help="JSON per-class report")

    def body(args, params):
        test = test_rows(SplitTable.open(args.clean, args.split, params.data))
        evaluation = run(Path(args.candidate), test, params.data)
        atomic.write_json(args.metrics, evaluation.metrics)
        atomic.write_json(args.report, evaluation.report)
        with atomic.atomic_path(args.confusion) as tmp:
            evaluation.confusion.to_csv(tmp, index=False)

    _cli.main("evaluate", body, p.parse_args())


if __name__ == "__main__":
    main()

"""Live drift: the served model's live sample against the data its version was trained on.

The pure core of the live check (dags/live_drift.py runs it through orchestration/live_drift_task.py):

- `parts_between` picks the sample parts (serving/live/sample.py) written in one check's interval,
  by their modification time, the clock the server's retention already uses: each part belongs to
  exactly one interval, so consecutive checks read every row once.
- `check_sample` profiles those rows and compares them with the reference by the drift stage's own
  code (`pipeline.drift.profile` and `compare`, `stages.drift.metrics_of` with `drift.threshold` and
  `drift.class_threshold`). The live rows have no label: the class balance compared is the served
  model's answers (`top_class`, as `data.classes`) against the training labels. Fewer rows than
  `airflow.live_drift.min_rows`, or no reference yet (nothing published), start nothing.
- `labelled_reason` holds the served version's answers on the labels that came back in the
  interval (serving/live/labels.py) to `gate.floors` (accuracy, macro F1); fewer than
  `airflow.live_drift.min_labels` labels ask for nothing.
- `decide` turns the list of reasons into "start a retrain?": one asking reason is enough.

The model's input row is the clean table's feature columns in table order. A plain table's model has
one input, `input` (each row a list); the reference keeps its features by name, so they are put in
table order by their names with numbers compared as numbers (`px_2` before `px_10`), the names the
embed stage writes. A mixed table's model has one input per raw column, named as the column: matched
by name.
"""

from __future__ import annotations

import html
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.drift import DriftError, compare, profile
from pipeline.params import DataParams, DriftParams
from stages.drift import Reference, metrics_of, render_report

PART_GLOB = "part-*.parquet"  # serving.live.sample's (that module imports the serving params)
INPUT = "input"  # a plain table model's one input (serving/configs.py INPUT_NAME)
ANSWER = "top_class"


@dataclass(frozen=True)
class Reason:
    """One check's word on starting a retrain."""

    source: str  # what checked: "drift" (the live sample) here; a labelled-accuracy check adds its own
    start: bool  # this reason alone asks for a retrain
    message: str  # what a person reads in the log, the report and the asset event


@dataclass(frozen=True)
class Decision:
    start: bool
    reasons: tuple[Reason, ...]

    @property
    def message(self) -> str:
        asking = [r for r in self.reasons if r.start] if self.start else list(self.reasons)
        head = "start a retrain" if self.start else "no retrain"
        return f"{head}: " + "; ".join(f"{r.source}: {r.message}" for r in asking)

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "message": self.message, "reasons": [asdict(r) for r in self.reasons]}


def decide(reasons: Sequence[Reason]) -> Decision:
    """Start a retrain when any reason asks for one (one run, whatever the number of reasons)."""
    return Decision(any(r.start for r in reasons), tuple(reasons))


@dataclass(frozen=True)
class LiveCheck:
    rows: int
    reason: Reason
    metrics: dict[str, Any] | None  # the drift stage's metrics of the comparison; None when none ran
    report_html: str


# --- the sample -------------------------------------------------------------------------------
def served_names(model: str) -> list[str]:
    """The sample folders of the serving version: the model's own, and its champion's during a rollout."""
    return [model, f"{model}.champion"]


def parts_between(folder: str | Path, names: Sequence[str], since: float, until: float) -> list[Path]:
    """The parts of `names` written in [since, until) (POSIX seconds, by modification time), oldest first."""
    found = []
    for name in names:
        for part in (Path(folder) / name).glob(PART_GLOB):
            written = part.stat().st_mtime
            if since <= written < until:
                found.append((written, part))
    return [part for _, part in sorted(found)]


def read_parts(parts: Sequence[Path]) -> pa.Table:
    """The rows of `parts` (an empty table for none)."""
    if not parts:
        return pa.table({})
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")


def natural_key(name: str) -> list[Any]:
    return [int(piece) if piece.isdigit() else piece for piece in re.split(r"(\d+)", name)]


def live_table(sample: pa.Table, features: Sequence[str], contract: DataParams) -> pa.Table:
    """The sample as a table the drift stage's profile reads: one column per feature, and the served
    model's answer as `data.label` (the class it names in `data.classes`)."""
    if all(name in sample.column_names for name in features):  # one input per raw column
        columns = {
            name: np.asarray(sample[name].to_pylist(), dtype=np.float64).reshape(len(sample), -1)[:, 0]
            for name in features
        }
    elif INPUT in sample.column_names:
        rows = np.asarray(sample[INPUT].to_pylist(), dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(features):
            raise DriftError(
                f"the live rows have {rows.shape[-1] if rows.ndim == 2 else 'ragged'} values, the reference "
                f"{len(features)} features: the served model does not take this data contract's rows; publish a "
                "version trained on it (its data becomes the reference)"
            )
        ordered = sorted(features, key=natural_key)
        columns = {name: rows[:, i] for i, name in enumerate(ordered)}
    else:
        raise DriftError(
            f"the live sample has neither an `{INPUT}` column nor one per feature ({list(features)[:5]}...): "
            f"columns {sample.column_names}"
        )
    classes = [str(c) for c in contract.classes]
    answers = [classes[i] if 0 <= i < len(classes) else f"#{i}" for i in sample[ANSWER].to_pylist()]
    return pa.table({**columns, contract.label: pa.array(answers)})


# --- the check --------------------------------------------------------------------------------
def check_sample(
    sample: pa.Table, reference: Reference, contract: DataParams, drift: DriftParams, min_rows: int
) -> LiveCheck:
    """The live rows against the reference: a drift asks for a retrain; no drift, too few rows or
    no reference asks for none."""
    rows = sample.num_rows
    if reference.profile is None:
        why = "no reference yet (no version published): nothing to compare the live rows with"
        return LiveCheck(rows, Reason("drift", False, why), None, simple_page(rows, why))
    if rows < min_rows:
        why = (
            f"{rows} live rows since the last check, fewer than airflow.live_drift.min_rows ({min_rows}): not compared"
        )
        return LiveCheck(rows, Reason("drift", False, why), None, simple_page(rows, why))
    features = list(reference.profile.features)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "live.parquet"
        pq.write_table(live_table(sample, features, contract), path)
        current, on_reference = profile(
            path, contract.label, features, drift.bins, drift.sample_rows, reference.profile
        )
    report = compare(reference.profile, current, on_reference)
    metrics = metrics_of(report, current, reference, drift)
    if metrics["status"] == "drift":
        reason = Reason("drift", True, f"{rows} live rows: {drift_sentence(metrics)}")
    else:
        reason = Reason(
            "drift",
            False,
            f"{rows} live rows: no drift above the thresholds (max PSI {metrics['max_psi']:.3f} <= "
            f"{drift.threshold}, class balance PSI {metrics['class_psi']:.3f} <= {drift.class_threshold})",
        )
    page = render_report(metrics, report, drift).replace(
        "<h1>Data drift report</h1>", f"<h1>Live drift check</h1>\n<p>{html.escape(reason.message)}</p>"
    )
    return LiveCheck(rows, reason, metrics, page.replace("<title>Data drift report", "<title>Live drift check"))


def labelled_reason(
    joined: pa.Table, classes: Sequence[int | str], floors: Mapping[str, float], min_labels: int
) -> Reason:
    """The served version's answers on the labels that came back in the interval (`joined`, from
    serving.live.labels.labelled) held to `gate.floors` (accuracy, f1_macro): one below its floor
    asks for a retrain; fewer than `min_labels` labels ask for nothing."""
    from sklearn.metrics import f1_score

    n = joined.num_rows
    if n < min_labels:
        why = f"{n} labels came back since the last check, fewer than airflow.live_drift.min_labels ({min_labels})"
        return Reason("accuracy", False, why)
    index = {str(c): i for i, c in enumerate(classes)}
    truth = np.array([index[label] for label in joined["label"].to_pylist()])
    predicted = np.asarray(joined["top_class"].to_pylist())
    measured = {
        "accuracy": float(np.mean(truth == predicted)),
        "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }
    below = {k: v for k, v in measured.items() if k in floors and v < floors[k]}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in measured.items())
    if below:
        floors_text = ", ".join(f"{k} {v:.4f} < gate.floors.{k} {floors[k]}" for k, v in below.items())
        return Reason("accuracy", True, f"on {n} labelled live rows: {floors_text}")
    return Reason("accuracy", False, f"on {n} labelled live rows: {shown}, every gate floor met")


def drift_sentence(metrics: dict[str, Any]) -> str:
    """What drifted, from the drift stage's metrics."""
    found = []
    if metrics["drifted_features"]:
        top = ", ".join(f"{k} {v:.3f}" for k, v in metrics["top"].items() if v > metrics["threshold"])
        found.append(f"{metrics['drifted_features']} feature(s) drifted above PSI {metrics['threshold']} ({top})")
    if metrics["class_shifted"]:
        found.append(
            f"the answers' class balance shifted (PSI {metrics['class_psi']:.3f} > {metrics['class_threshold']})"
        )
    return f"drift from the training data of {metrics['reference'] or 'the served version'}: " + "; ".join(found)


def simple_page(rows: int, why: str) -> str:
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>Live drift check</title></head><body>"
        f"<h1>Live drift check</h1><p>{html.escape(why)}</p><p>rows: {rows}</p></body></html>\n"
    )

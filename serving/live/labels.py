"""Labels that come back later: the true class of a kept request, sent by its request id.

A label is accepted only for a request the live sample kept (serving/live/sample.py) under the
model's name, `<model>.champion` or `<model>.candidate`, once and with a class of `data.classes`;
anything else is refused with the reason (LabelRefused). Accepted labels live in one SQLite file
per model, `<sample dir>/labels/<model>.sqlite`: each is committed before the answer goes back, so
a restart loses none, and labels older than the sample's `retention_days` are deleted as parts are.

`labelled(dir, model)` joins the sample with its labels: what the live report and the rollout's
labelled-accuracy signal read.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import StageError
from serving.live.sample import read_sample, sample_parts

ROLES = ("", ".champion", ".candidate")  # the names a model's requests are kept under


class LabelRefused(StageError):
    """A label that is not stored, and why; `status` is the HTTP status the service answers with."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Label:
    model: str
    request_id: str
    row: int
    label: str
    received_at: str  # ISO 8601, UTC


def served_names(model: str) -> list[str]:
    return [model + role for role in ROLES]


class SampleIndex:
    """The (request id, row count) of every kept request of a model, read from the sample's parts
    and refreshed with the parts written since."""

    def __init__(self, folder: Path, model: str):
        self.folder, self.model = Path(folder), model
        self.seen: set[Path] = set()
        self.rows: dict[str, int] = {}
        self.lock = threading.Lock()

    def refresh(self) -> None:
        with self.lock:
            for name in served_names(self.model):
                for part in sample_parts(self.folder, name):
                    if part in self.seen:
                        continue
                    table = pq.read_table(part, columns=["request_id", "row"])
                    for request_id, row in zip(table["request_id"].to_pylist(), table["row"].to_pylist(), strict=True):
                        self.rows[request_id] = max(self.rows.get(request_id, 0), row + 1)
                    self.seen.add(part)

    def rows_of(self, request_id: str) -> int | None:
        """How many rows the request had (None: not kept, or not written yet)."""
        if request_id not in self.rows:
            self.refresh()
        return self.rows.get(request_id)


class LabelStore:
    """The accepted labels of one model (SQLite, one row per labelled request row)."""

    def __init__(self, folder: str | Path, model: str, classes: Sequence[int | str], retention_days: float):
        self.folder, self.model = Path(folder), model
        self.classes = [str(c) for c in classes]
        self.retention = dt.timedelta(days=retention_days)
        self.path = labels_path(self.folder, model)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.index = SampleIndex(self.folder, model)
        self.lock = threading.Lock()
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS labels (request_id TEXT NOT NULL, row INTEGER NOT NULL, "
                "label TEXT NOT NULL, label_index INTEGER NOT NULL, received_at TEXT NOT NULL, "
                "PRIMARY KEY (request_id, row))"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # committed = on disk
        return db

    def add(self, request_id: str, label: int | str, row: int = 0) -> Label:
        """Store one label, or raise LabelRefused saying why not."""
        if not request_id:
            raise LabelRefused(400, "request_id is empty: send the id the request was made with")
        if str(label) not in self.classes:
            raise LabelRefused(422, f"label {label!r} is not one of data.classes {self.classes}")
        rows = self.index.rows_of(request_id)
        if rows is None:
            raise LabelRefused(
                404,
                f"request {request_id!r} is not in {self.model}'s live sample: only kept requests take labels "
                "(serving.sample.rate), and a kept request is written within serving.sample.rotate_s; "
                "or its part is older than serving.sample.retention_days",
            )
        if not 0 <= row < rows:
            raise LabelRefused(422, f"request {request_id!r} had {rows} row(s): row must be 0..{rows - 1}, got {row}")
        now = dt.datetime.now(dt.UTC)
        with self.lock, self._connect() as db:
            earlier = db.execute(
                "SELECT label, received_at FROM labels WHERE request_id = ? AND row = ?", (request_id, row)
            ).fetchone()
            if earlier is not None:
                raise LabelRefused(
                    409, f"request {request_id!r} row {row} was labelled {earlier[0]!r} at {earlier[1]} already"
                )
            db.execute(
                "INSERT INTO labels VALUES (?, ?, ?, ?, ?)",
                (request_id, row, str(label), self.classes.index(str(label)), now.isoformat()),
            )
            db.execute("DELETE FROM labels WHERE received_at < ?", ((now - self.retention).isoformat(),))
        return Label(self.model, request_id, row, str(label), now.isoformat())


def labels_path(folder: str | Path, model: str) -> Path:
    return Path(folder) / "labels" / f"{model}.sqlite"


def read_labels(folder: str | Path, model: str) -> pa.Table:
    """Every stored label of a model: request_id, row, label, label_index, received_at."""
    path = labels_path(folder, model)
    rows: list[Any] = []
    if path.exists():
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0) as db:
            rows = db.execute("SELECT request_id, row, label, label_index, received_at FROM labels").fetchall()
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[], [], [], [], []]
    return pa.table(
        {
            "request_id": pa.array(columns[0], pa.string()),
            "row": pa.array(columns[1], pa.int32()),
            "label": pa.array(columns[2], pa.string()),
            "label_index": pa.array(columns[3], pa.int32()),
            "received_at": pa.array(columns[4], pa.string()),
        }
    )


def labelled(folder: str | Path, model: str, names: Sequence[str] | None = None) -> pa.Table:
    """The kept rows of every name the model answered under (or of `names`), with their labels and
    when each came (rows without one left out), and `correct`: whether the top class is the label."""
    tables = [read_sample(folder, name) for name in (names or served_names(model))]
    tables = [t.select(["request_id", "row", "model", "version", "time", "top_class"]) for t in tables if t.num_rows]
    labels = read_labels(folder, model)
    if not tables or labels.num_rows == 0:
        return pa.table(
            {
                "request_id": pa.array([], pa.string()),
                "row": pa.array([], pa.int32()),
                "model": pa.array([], pa.string()),
                "version": pa.array([], pa.int64()),
                "time": pa.array([], pa.timestamp("us", tz="UTC")),
                "top_class": pa.array([], pa.int32()),
                "label": pa.array([], pa.string()),
                "received_at": pa.array([], pa.string()),
                "correct": pa.array([], pa.bool_()),
            }
        )
    joined = pa.concat_tables(tables).join(
        labels.select(["request_id", "row", "label", "label_index", "received_at"]),
        ["request_id", "row"],
        join_type="inner",
    )
    correct = pc.equal(joined["top_class"], joined["label_index"])
    return joined.drop_columns(["label_index"]).append_column("correct", correct)

"""The served model over time: accuracy, macro F1 and the class confusion per version per day,
from the live sample joined with the labels that came back (serving/live/labels.py).

    python -m serving live-report [--model NAME] [--out reports/live.html] [--json reports/live.json]

Pure code from a joined table to a dict (`live_report`) and to one self-contained HTML page
(`render`); the scheduled live check writes both beside its other reports.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from sklearn.metrics import confusion_matrix, f1_score


def live_report(joined: pa.Table, classes: Sequence[int | str], model: str) -> dict[str, Any]:
    """Per served name and version, per UTC day: labelled rows, accuracy, macro F1 (over the
    classes seen that day, in labels or predictions) and the confusion matrix (rows: label)."""
    names = [str(c) for c in classes]
    index = {name: i for i, name in enumerate(names)}
    groups: dict[tuple[str, int, str], list[tuple[int, int]]] = {}
    if joined.num_rows:
        days = [t.astimezone(dt.UTC).date().isoformat() for t in joined["time"].to_pylist()]
        for served, version, day, top, label in zip(
            joined["model"].to_pylist(),
            joined["version"].to_pylist(),
            days,
            joined["top_class"].to_pylist(),
            joined["label"].to_pylist(),
            strict=True,
        ):
            groups.setdefault((served, int(version), day), []).append((index[label], int(top)))
    rows = []
    for (served, version, day), pairs in sorted(groups.items(), key=lambda item: (item[0][2], item[0][0], item[0][1])):
        truth, predicted = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        rows.append(
            {
                "day": day,
                "served_as": served,
                "version": version,
                "labelled": len(pairs),
                "accuracy": float(np.mean(truth == predicted)),
                "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0)),
                "confusion": confusion_matrix(truth, predicted, labels=list(range(len(names)))).tolist(),
            }
        )
    return {"model": model, "classes": names, "rows": rows}


def render(report: dict[str, Any]) -> str:
    """One HTML page: a table of the days, then each day's confusion matrix."""
    esc = html.escape
    classes = report["classes"]
    lines = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{esc(report['model'])}: the served model on live requests</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}.diag{background:#e6f4ea}</style>",
        f"<h1>{esc(report['model'])}: the served model on live requests</h1>",
    ]
    if not report["rows"]:
        lines.append(
            "<p>No labelled live requests yet: turn the live sample on (<code>serving.sample.rate</code>) "
            "and send labels (<code>python -m serving label</code>).</p>"
        )
        return "\n".join(lines)
    lines.append("<table><tr><th>day (UTC)</th><th>served as</th><th>version</th><th>labelled</th>")
    lines.append("<th>accuracy</th><th>macro F1</th></tr>")
    for row in report["rows"]:
        lines.append(
            f"<tr><td>{row['day']}</td><td>{esc(row['served_as'])}</td><td>{row['version']}</td>"
            f"<td>{row['labelled']}</td><td>{row['accuracy']:.4f}</td><td>{row['f1_macro']:.4f}</td></tr>"
        )
    lines.append("</table>")
    for row in report["rows"]:
        lines.append(
            f"<h3>{row['day']}, {esc(row['served_as'])} version {row['version']}: label (rows) x predicted</h3>"
        )
        lines.append("<table><tr><th></th>" + "".join(f"<th>{esc(c)}</th>" for c in classes) + "</tr>")
        for i, counts in enumerate(row["confusion"]):
            cells = "".join(
                f"<td class='diag'>{n}</td>" if i == j else f"<td>{n or ''}</td>" for j, n in enumerate(counts)
            )
            lines.append(f"<tr><th>{esc(classes[i])}</th>{cells}</tr>")
        lines.append("</table>")
    return "\n".join(lines)


def accuracy_by_version(report: dict[str, Any], since: str | None = None) -> dict[int, tuple[int, float]]:
    """Labelled rows and accuracy per version over the report's days (from `since`, a date)."""
    totals: dict[int, list[float]] = {}
    for row in report["rows"]:
        if since is None or row["day"] >= since:
            n, correct = totals.setdefault(row["version"], [0, 0.0])
            totals[row["version"]] = [n + row["labelled"], correct + row["accuracy"] * row["labelled"]]
    return {version: (int(n), correct / n) for version, (n, correct) in totals.items() if n}

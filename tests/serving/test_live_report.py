"""The live report's figures from a joined table (no server): per served name, version and UTC day."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from serving.live.report import accuracy_by_version, live_report, render


def joined(rows: list[tuple[str, int, str, int, str]]) -> pa.Table:
    """(served as, version, ISO time, top class, label) rows, as labels.labelled() returns them."""
    served, version, time, top, label = zip(*rows, strict=True)
    return pa.table(
        {
            "model": list(served),
            "version": pa.array(version, pa.int64()),
            "time": pa.array([dt.datetime.fromisoformat(t) for t in time], pa.timestamp("us", tz="UTC")),
            "top_class": pa.array(top, pa.int32()),
            "label": list(label),
        }
    )


def test_each_version_and_day_has_its_own_accuracy_macro_f1_and_confusion():
    day1, day2 = "2026-12-01T23:59:00+00:00", "2026-12-02T00:01:00+00:00"
    table = joined(
        [
            # day 1, version 1: labels a a b b, predicted a b b b
            ("m", 1, day1, 0, "a"),
            ("m", 1, day1, 1, "a"),
            ("m", 1, day1, 1, "b"),
            ("m", 1, day1, 1, "b"),
            # day 2: version 1 right once, the candidate (version 2) wrong once
            ("m.champion", 1, day2, 2, "c"),
            ("m.candidate", 2, day2, 0, "c"),
        ]
    )
    report = live_report(table, ["a", "b", "c"], "m")
    by = {(r["day"], r["served_as"]): r for r in report["rows"]}
    first = by[("2026-12-01", "m")]
    assert (first["labelled"], first["accuracy"]) == (4, 0.75)
    # F1 of a: precision 1, recall 1/2 -> 2/3; of b: precision 2/3, recall 1 -> 4/5; c never seen.
    assert first["f1_macro"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert first["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert by[("2026-12-02", "m.champion")]["accuracy"] == 1.0
    assert by[("2026-12-02", "m.candidate")]["confusion"][2] == [1, 0, 0]
    assert accuracy_by_version(report) == {1: (5, 0.8), 2: (1, 0.0)}
    assert accuracy_by_version(report, since="2026-12-02") == {1: (1, 1.0), 2: (1, 0.0)}
    page = render(report)
    assert "0.7500" in page and "m.candidate" in page


def test_no_labels_yet_says_how_to_get_them():
    report = live_report(joined([("m", 1, "2026-12-01T00:00:00+00:00", 0, "a")]).slice(0, 0), ["a", "b"], "m")
    assert report["rows"] == [] and "python -m serving label" in render(report)

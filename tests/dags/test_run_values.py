"""What the DAG's tasks hand each other through XCom is typed, and plain JSON only at the edge."""

from __future__ import annotations

import json

import pytest

from orchestration.run_values import PreparedRun, PushedVersion


def test_a_value_survives_the_xcom_edge_as_json():
    prepared = PreparedRun("c0ffee", "refs/retrain/runs/r", None, "2026-01-26", ["params.yaml"], [], "abc", "/w")
    pushed = PushedVersion(model="digits", version=3, serving=3, previous=2, created=True, seconds=1.5)
    for value in (prepared, pushed):
        edge = json.loads(json.dumps(value.to_xcom()))  # what Airflow stores and hands back
        assert type(value).from_xcom(edge) == value


def test_a_value_with_keys_it_does_not_know_is_refused():
    with pytest.raises(ValueError, match=r"PushedVersion: unexpected keys \['versoin'\]"):
        PushedVersion.from_xcom(
            {"model": "m", "version": 1, "serving": 1, "previous": None, "created": True, "seconds": 0.1, "versoin": 2}
        )

"""The gate's decision rule (the live champion scoring runs in tests/dags/test_retrain_e2e.py)."""

from __future__ import annotations

import pytest

from pipeline.params import GateParams
from stages import _cli
from stages.gate import decide, diff_markdown, serving_version

PARAMS = GateParams(floors={"accuracy": 0.9, "f1_macro": 0.9}, max_regression={"accuracy": 0.01})
GOOD = {"accuracy": 0.97, "f1_macro": 0.96, "test_rows": 270}


def test_first_deployment_passes_on_floors_alone() -> None:
    decision = decide(GOOD, None, PARAMS)
    assert decision.passed and "first deployment" in decision.reason
    assert [c.champion for c in decision.checks] == [None, None]


def test_below_a_floor_is_rejected_with_the_metric_named() -> None:
    decision = decide({**GOOD, "f1_macro": 0.5}, None, PARAMS)
    assert not decision.passed
    assert "f1_macro 0.5000 is below the floor 0.9000" in decision.reason


def test_regression_beyond_the_allowance_is_rejected() -> None:
    decision = decide({**GOOD, "accuracy": 0.95}, {**GOOD, "accuracy": 0.98}, PARAMS)
    assert not decision.passed
    assert "0.0300 below the champion's 0.9800" in decision.reason
    # f1_macro has a floor but no regression limit: only its floor applies
    assert [c.passed for c in decision.checks] == [False, True]


def test_small_regression_within_the_allowance_passes() -> None:
    decision = decide({**GOOD, "accuracy": 0.975}, {**GOOD, "accuracy": 0.98}, PARAMS)
    assert decision.passed and "champion" in decision.reason
    assert decision.checks[0].delta == pytest.approx(-0.005)


def test_a_metric_evaluate_does_not_report_is_an_error() -> None:
    with pytest.raises(_cli.StageError, match="macro_f1"):
        decide(GOOD, None, GateParams(floors={"macro_f1": 0.9}, max_regression={}))


def test_diff_table_shows_both_sides() -> None:
    text = diff_markdown(decide(GOOD, {**GOOD, "accuracy": 0.96}, PARAMS))
    assert "| accuracy | 0.9700 | 0.9600 | +0.0100 | 0.9000 | 0.0100 | yes |" in text


def test_serving_version_is_the_newest_ready_one() -> None:
    class Index:
        def repository_index(self):
            return [
                {"name": "digits", "version": "1", "state": "UNAVAILABLE"},
                {"name": "digits", "version": "2", "state": "READY"},
                {"name": "other", "version": "7", "state": "READY"},
            ]

    assert serving_version(Index(), "digits") == 2
    assert serving_version(Index(), "missing") is None

"""The gate's speed check (stages/gate_speed.py): the comparison on synthetic measurements, and its
place in the decision. The real-server test (a slow candidate refused) is in tests/stages/test_tune.py."""

from __future__ import annotations

import pytest

from stages.gate import GateParams, decide, diff_markdown
from stages.gate_speed import CANDIDATE, CHAMPION, compare

METRICS = {"accuracy": 0.98, "f1_macro": 0.98}


def cells(candidate: list[tuple[float, float]], champion: list[tuple[float, float]], c: int = 1) -> dict:
    """(rows/s, p99 ms) per round of each side at one concurrency."""

    def side(rounds):
        return {c: [{"rows_per_s": r, "p99_ms": p, "errors": 0} for r, p in rounds]}

    return {CANDIDATE: side(candidate), CHAMPION: side(champion)}


def test_twice_as_slow_is_refused_and_the_reason_says_why():
    gate = GateParams(max_latency_regression=0.5, max_throughput_regression=0.3)
    # A burst in round 2 triples both p99s: the paired ratio stays 2x.
    speed = compare(cells([(50, 20), (17, 60), (50, 21)], [(100, 10), (33, 30), (100, 10)]), *gate.speed_allowances)
    assert not speed["passed"]
    assert speed["p99_ratio"]["1"] == pytest.approx(2.0, rel=0.05)
    decision = decide(METRICS, METRICS, gate, speed=speed)
    assert not decision.passed
    assert "p99 at 1 concurrent clients is 2.00x the champion's (at most 1.50x" in decision.reason
    assert "rows/s is 0.50x the champion's (at least 0.70x" in decision.reason
    assert "Speed against the champion" in diff_markdown(decision)


def test_noise_within_the_allowance_passes():
    gate = GateParams(max_latency_regression=0.5)
    speed = compare(cells([(95, 12), (30, 40), (105, 9)], [(100, 10), (33, 30), (100, 10)]), *gate.speed_allowances)
    assert speed["passed"], speed["problems"]
    decision = decide(METRICS, METRICS, gate, speed=speed)
    assert decision.passed and "nor its speed" in decision.reason


def test_only_the_named_allowance_is_judged():
    slow_but_same_throughput = cells([(100, 40)] * 3, [(100, 10)] * 3)
    assert compare(slow_but_same_throughput, None, 0.1)["passed"]
    assert not compare(slow_but_same_throughput, 1.0, None)["passed"]


def test_a_candidate_failing_requests_the_champion_answers_is_refused():
    measured = cells([(100, 10)] * 3, [(100, 10)] * 3)
    measured[CANDIDATE][1][0]["errors"] = 5
    speed = compare(measured, 0.5, None)
    assert speed["problems"] == ["the candidate failed 5 requests that the champion answered"]


def test_speed_is_off_by_default():
    assert GateParams().max_latency_regression is None and GateParams().max_throughput_regression is None
    decision = decide(METRICS, METRICS, GateParams())
    assert decision.speed is None and decision.passed

"""The rollout's decision (serving/rollout/decision.py): its error rates measured on simulated
rollouts, not claimed, and the pieces it is made of.

The simulation (tests/rollout_simulation.py) runs 500 rollouts of each case through the same
`decide` that judges a live rollout, with params.yaml's `rollout:` margins and error rates: a
candidate as good as the champion must be rolled back in at most `alpha` of them, one worse by a
margin (failures, p95 latency, agreement) in at least 1 - `beta`. Run with `-s` to see the counts
and how many requests each decision took.
"""

from __future__ import annotations

import numpy as np
import pytest
from rollout_simulation import Behaviour, simulate

from serving.rollout.decision import CONTINUE, FAIL, PASS, Arm, Evidence, Labels, cdf, decide, quantile
from serving.rollout.router_config import latency_bounds

ROLLOUTS = 500
CHAMPION = Behaviour(failure=0.002, median_s=0.002, sigma=0.3, disagreement=0.0)


def cases(params) -> dict[str, Behaviour]:
    """The equal candidate and one worse by each signal's margin, exactly."""
    shadow = params.mode == "shadow"
    equal = Behaviour(
        failure=CHAMPION.failure,
        median_s=CHAMPION.median_s,
        sigma=CHAMPION.sigma,
        disagreement=1.0 - params.agreement.baseline,
    )
    worse = {
        "failures": Behaviour(**{**equal.__dict__, "failure": equal.failure + params.failures.margin}),
        "latency": Behaviour(**{**equal.__dict__, "median_s": equal.median_s * (1.0 + params.latency.margin)}),
    }
    if shadow:
        worse["agreement"] = Behaviour(
            **{**equal.__dict__, "disagreement": equal.disagreement + params.agreement.margin}
        )
    return {"equal": equal, **worse}


@pytest.mark.parametrize("mode", ["shadow", "canary"])
def test_simulated_rollouts_meet_the_error_rates(params, mode):
    rollout = params.rollout.model_copy(update={"mode": mode})
    print(f"\n  {mode}: steps {rollout.steps}, alpha {rollout.alpha}, beta {rollout.beta}")
    for seed, (name, candidate) in enumerate(cases(rollout).items()):
        outcome = simulate(rollout, candidate, CHAMPION, rollouts=ROLLOUTS, seed=seed)
        share = outcome.rolled_back_share(rollout.on_limit)
        print(f"  {name:<10} rolled back {share:.3f}: {outcome.describe()}")
        assert outcome.rollouts == ROLLOUTS
        if name == "equal":
            assert share <= rollout.alpha
        else:
            assert share >= 1.0 - rollout.beta


def test_the_latency_histogram_reads_back_its_quantiles():
    bounds = latency_bounds()
    seconds = 0.002 * np.exp(0.4 * np.random.default_rng(0).standard_normal(20000))
    counts = np.bincount(np.minimum(np.searchsorted(bounds, seconds), len(bounds) - 1), minlength=len(bounds))
    for q in (0.5, 0.95, 0.99):
        exact = np.quantile(seconds, q)
        assert abs(quantile(counts, bounds, q) / exact - 1) < 0.03  # within a third of a bucket (9%)
        assert abs(cdf(counts, bounds, np.asarray(exact)) - q) < 0.01


def evidence(champion_failed=0, candidate_failed=0, n=400, slower=1.0, disagreed=0):
    bounds = latency_bounds()
    rng = np.random.default_rng(1)

    def histogram(count, scale):
        seconds = 0.002 * scale * np.exp(0.3 * rng.standard_normal(count))
        return np.bincount(np.minimum(np.searchsorted(bounds, seconds), len(bounds) - 1), minlength=len(bounds))

    champion = Arm(np.asarray(n - champion_failed), np.asarray(champion_failed), histogram(n - champion_failed, 1.0))
    candidate = Arm(
        np.asarray(n - candidate_failed), np.asarray(candidate_failed), histogram(n - candidate_failed, slower)
    )
    return Evidence(champion, candidate, bounds, np.asarray(n - candidate_failed), np.asarray(disagreed))


def test_each_signal_fails_a_clearly_worse_candidate_and_passes_an_equal_one(params):
    shadow = params.rollout.model_copy(update={"mode": "shadow"})
    verdict = decide(evidence(n=3000), shadow)
    assert verdict.state == PASS, verdict.reason()
    for worse, signal in (
        (evidence(candidate_failed=80), "failures"),
        (evidence(slower=3.0), "latency"),
        (evidence(disagreed=40), "agreement"),
    ):
        verdict = decide(worse, shadow)
        failed = [t.signal for t in verdict.tests if t.state == FAIL]
        assert verdict.state == FAIL and failed == [signal], verdict.reason()


def test_nothing_is_decided_before_each_version_has_min_requests(params):
    shadow = params.rollout.model_copy(update={"mode": "shadow", "min_requests": 500})
    verdict = decide(evidence(candidate_failed=80, n=400), shadow)
    assert verdict.state == CONTINUE, verdict.reason()


def test_labelled_accuracy_fails_a_candidate_wrong_more_often_and_a_step_waits_for_its_labels(params):
    canary = params.rollout.model_copy(
        update={"mode": "canary", "accuracy": params.rollout.accuracy.model_copy(update={"min_labels": 100})}
    )
    assert "accuracy" in canary.signals and "accuracy" not in params.rollout.signals  # off by default

    def labelled(n, champion_wrong, candidate_wrong):
        return Labels(*(np.asarray(v) for v in (n, champion_wrong, n, candidate_wrong)))

    base = evidence(n=3000)
    waiting = decide(base, canary)  # the other signals pass, the labels have not come back
    assert waiting.state == CONTINUE and {t.signal: t.state for t in waiting.tests}["accuracy"] == CONTINUE
    few = decide(Evidence(base.champion, base.candidate, base.bounds, labels=labelled(60, 0, 30)), canary)
    assert few.state == CONTINUE  # 30 of 60 wrong, but fewer than min_labels
    worse = decide(Evidence(base.champion, base.candidate, base.bounds, labels=labelled(400, 4, 40)), canary)
    assert worse.state == FAIL and [t.signal for t in worse.tests if t.state == FAIL] == ["accuracy"]
    equal = decide(Evidence(base.champion, base.candidate, base.bounds, labels=labelled(1000, 10, 10)), canary)
    assert equal.state == PASS, equal.reason()

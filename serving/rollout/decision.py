"""The decision of a rollout: promote the candidate, roll it back, or keep watching, by a sequential
test on live signals. Pure code: counts in, a verdict out.

Each signal is a sequential probability ratio test (Wald's SPRT) on a share of Bernoulli events of
the candidate, between H0 "as good as the champion" and H1 "worse by the margin" (params
`rollout:`):

- failures: the share of the candidate's requests that fail. H0: the champion's share (estimated
  from its requests in the same step, at least FAILURE_FLOOR), H1: that + `failures.margin`.
- latency: of the answers slower than t, the `latency.quantile` (p95) of both versions' answers
  pooled, the share the candidate gave. H0: its share of all answers (equal distributions make
  the versions' labels exchangeable), H1: what a candidate (1 + margin) times slower would give,
  computed from the champion's own latency histogram, so no shape of the distribution is assumed.
- agreement (shadow): the share of predictions whose top class differs from the champion's. H0:
  1 - `agreement.baseline`, H1: that + `agreement.margin`.
- accuracy (when `accuracy.min_labels` > 0): of the candidate's kept rows whose labels came back,
  the share it answered wrong. H0: the champion's share in the same step, H1: that +
  `accuracy.margin`. It decides once each version has `min_labels` labelled rows in the step, and
  a step waits for it.

Each test's log-likelihood ratio (LLR) is compared with Wald's bounds: at or above
log((1 - beta) / alpha') the candidate is worse (roll back), at or below log(beta / (1 - alpha'))
it is as good (this signal passes). alpha is split evenly over every test of the rollout
(signals x steps, Bonferroni), so that an equal candidate is rolled back with probability at most
alpha in all; beta is not split: a candidate worse in one signal is promoted only if that signal's
test passes it. A step passes when every signal passes at once; any signal above its upper bound
fails it. Both arms need `min_requests` in the step before anything is decided.

Every function takes numpy arrays with any leading shape (one rollout live, thousands in the
simulation test) and the same code decides both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.rollout.params import RolloutParams

# A champion that has not failed yet counts as failing 1 request in 1000: one failure of the
# candidate is then evidence against it, not proof.
FAILURE_FLOOR = 1e-3

CONTINUE, PASS, FAIL = "continue", "pass", "fail"


@dataclass(frozen=True)
class Arm:
    """One version's counts in a step: answered and failed requests, and its answered requests per
    latency bucket (`[..., buckets]`, bucket i covering (bounds[i-1], bounds[i]])."""

    answered: np.ndarray
    failed: np.ndarray
    latency: np.ndarray

    @property
    def requests(self) -> np.ndarray:
        return self.answered + self.failed


@dataclass(frozen=True)
class Labels:
    """Each version's labelled rows in a step (labels sent back later) and how many it got wrong."""

    champion_labelled: np.ndarray
    champion_wrong: np.ndarray
    candidate_labelled: np.ndarray
    candidate_wrong: np.ndarray


@dataclass(frozen=True)
class Evidence:
    """What the router counted in one step (serving/rollout/live.py reads it from Triton's metrics)."""

    champion: Arm
    candidate: Arm
    bounds: np.ndarray  # upper bound of each latency bucket, seconds, increasing
    compared: np.ndarray | None = None  # shadow: predictions both versions answered
    disagreed: np.ndarray | None = None  # of which the top classes differ
    labels: Labels | None = None  # labelled rows per version, once labels come back


@dataclass(frozen=True)
class Test:
    """One signal's SPRT: H0 share p0, H1 share p1, what was seen (k of n), its LLR and state."""

    signal: str
    p0: np.ndarray
    p1: np.ndarray
    k: np.ndarray
    n: np.ndarray
    llr: np.ndarray
    state: np.ndarray  # CONTINUE | PASS | FAIL per rollout
    notes: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. the champion's and the candidate's p95

    def to_json(self) -> dict[str, Any]:
        """One rollout's test as plain numbers (the state file, the report page, the task's log)."""

        def plain(value: np.ndarray) -> Any:
            return value.item() if np.ndim(value) == 0 else value.tolist()

        return {
            "signal": self.signal,
            "p0": plain(self.p0),
            "p1": plain(self.p1),
            "k": plain(self.k),
            "n": plain(self.n),
            "llr": plain(self.llr),
            "state": plain(self.state),
            **{key: plain(value) for key, value in self.notes.items()},
        }


@dataclass(frozen=True)
class Verdict:
    state: np.ndarray  # CONTINUE | PASS | FAIL per rollout
    tests: list[Test]
    bounds: tuple[float, float]  # (lower, upper) LLR bounds

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.item() if np.ndim(self.state) == 0 else self.state.tolist(),
            "lower": self.bounds[0],
            "upper": self.bounds[1],
            "tests": [test.to_json() for test in self.tests],
        }

    def reason(self) -> str:
        """One line: which signals decided, with what they saw (one rollout)."""
        parts = []
        for test in self.tests:
            share = float(test.k) / float(test.n) if float(test.n) else float("nan")
            parts.append(
                f"{test.signal} {str(test.state)}: {float(test.k):.0f}/{float(test.n):.0f} = {share:.4f} "
                f"(H0 {float(test.p0):.4f}, H1 {float(test.p1):.4f}, LLR {float(test.llr):+.2f})"
            )
        return "; ".join(parts)


def wald_bounds(alpha: float, beta: float, tests: int) -> tuple[float, float]:
    """(lower, upper) LLR bounds of each of `tests` SPRTs sharing the error rate alpha."""
    a = alpha / tests
    return float(np.log(beta / (1.0 - a))), float(np.log((1.0 - beta) / a))


def bernoulli_llr(k: np.ndarray, n: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """log P(k of n | p1) / P(k of n | p0)."""
    return k * np.log(p1 / p0) + (n - k) * np.log((1.0 - p1) / (1.0 - p0))


def cdf(counts: np.ndarray, bounds: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Share of the counts at or below x, log-linear within a bucket. counts [..., B], x [...]."""
    total = np.maximum(counts.sum(axis=-1), 1)
    upper, lower = _edges(bounds)
    i = np.clip(np.searchsorted(bounds, x), 0, len(bounds) - 1)
    below = np.take_along_axis(np.cumsum(counts, axis=-1), i[..., None], axis=-1)[..., 0]
    inside = np.take_along_axis(counts, i[..., None], axis=-1)[..., 0]
    fraction = np.clip((np.log(x) - np.log(lower[i])) / (np.log(upper[i]) - np.log(lower[i])), 0.0, 1.0)
    return (below - inside + inside * fraction) / total


def quantile(counts: np.ndarray, bounds: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile of a latency histogram, log-linear within the bucket it falls in."""
    total = np.maximum(counts.sum(axis=-1, keepdims=True), 1)
    cumulative = np.cumsum(counts, axis=-1) / total
    i = np.argmax(cumulative >= q, axis=-1)
    upper, lower = _edges(bounds)
    after = np.take_along_axis(cumulative, i[..., None], axis=-1)[..., 0]
    inside = np.take_along_axis(counts, i[..., None], axis=-1)[..., 0] / total[..., 0]
    fraction = np.where(inside > 0, (q - (after - inside)) / np.where(inside > 0, inside, 1), 1.0)
    return np.exp(np.log(lower[i]) + np.clip(fraction, 0.0, 1.0) * (np.log(upper[i]) - np.log(lower[i])))


def _edges(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower edge of each bucket; the first starts one ratio below its upper bound."""
    bounds = np.asarray(bounds, dtype=np.float64)
    lower = np.concatenate([[bounds[0] * bounds[0] / bounds[1]], bounds[:-1]])
    return bounds, lower


def failures_test(evidence: Evidence, margin: float) -> Test:
    champion, candidate = evidence.champion, evidence.candidate
    p0 = np.maximum((champion.failed + 0.5) / (champion.requests + 1.0), FAILURE_FLOOR)
    p1 = np.minimum(p0 + margin, 0.999)
    k, n = candidate.failed.astype(np.float64), candidate.requests.astype(np.float64)
    return Test("failures", p0, p1, k, n, bernoulli_llr(k, n, p0, p1), _undecided(k))


def latency_test(evidence: Evidence, q: float, margin: float) -> Test:
    """Conditional on the answers slower than t, the `q`-quantile of both versions' answers
    pooled: which version gave each of them. As good (H0): the same latency distribution, so
    each is the candidate's with its share of the answers, pi0 = n1 / (n0 + n1), whatever the
    distribution (a permutation argument: the labels are exchangeable). Worse (H1): the candidate
    is (1 + margin) times slower, so above t it has the share 1 - F0(t / (1 + margin)) of its
    answers where the champion has 1 - F0(t), F0 the champion's own latency distribution: pi1 =
    n1 r / (n0 + n1 r) with r the ratio of the two."""
    bounds = evidence.bounds
    champion, candidate = evidence.champion.latency, evidence.candidate.latency
    n0 = champion.sum(axis=-1).astype(np.float64)
    n1 = candidate.sum(axis=-1).astype(np.float64)
    t = quantile(champion + candidate, bounds, q)
    k0 = n0 * (1.0 - cdf(champion, bounds, t))  # answers above t (fractional within t's bucket)
    k1 = n1 * (1.0 - cdf(candidate, bounds, t))
    # How many times more of its answers a slower candidate has above t than the champion, read
    # where the champion's histogram has answers: at t, or at the champion's own quantile when t
    # lies beyond them (a much slower candidate). Tails that thin out (normal, log-normal) give a
    # larger ratio further out, so the power is understated there, never overstated.
    at = np.minimum(t, quantile(champion, bounds, q))
    above = np.maximum(1.0 - cdf(champion, bounds, at), 1e-9)
    ratio = np.maximum((1.0 - cdf(champion, bounds, at / (1.0 + margin))) / above, 1.0)
    pi0 = np.clip(n1 / np.maximum(n0 + n1, 1.0), 1e-6, 1 - 1e-6)
    pi1 = np.clip(n1 * ratio / np.maximum(n0 + n1 * ratio, 1e-12), pi0 + 1e-6, 1 - 1e-7)
    notes = {
        "champion_quantile_s": quantile(champion, bounds, q),
        "candidate_quantile_s": quantile(candidate, bounds, q),
        "pooled_quantile_s": t,
    }
    return Test("latency", pi0, pi1, k1, k0 + k1, bernoulli_llr(k1, k0 + k1, pi0, pi1), _undecided(k1), notes)


def accuracy_test(evidence: Evidence, margin: float) -> Test:
    """The candidate's wrong answers among its labelled rows. H0: the champion's share of wrong
    answers in the same step (at least FAILURE_FLOOR), H1: that + `margin`."""
    labels = evidence.labels
    if labels is None:
        zero = np.zeros(np.shape(evidence.candidate.answered))
        labels = Labels(zero, zero, zero, zero)
    p0 = np.maximum((labels.champion_wrong + 0.5) / (labels.champion_labelled + 1.0), FAILURE_FLOOR)
    p1 = np.minimum(p0 + margin, 0.999)
    k, n = np.asarray(labels.candidate_wrong, np.float64), np.asarray(labels.candidate_labelled, np.float64)
    return Test("accuracy", p0, p1, k, n, bernoulli_llr(k, n, p0, p1), _undecided(k))


def _undecided(like: np.ndarray) -> np.ndarray:
    return np.full(np.shape(like), CONTINUE, dtype=object)


def agreement_test(evidence: Evidence, baseline: float, margin: float) -> Test:
    if evidence.compared is None or evidence.disagreed is None:
        raise ValueError("the agreement test needs the shadow counts (compared, disagreed)")
    n, k = evidence.compared.astype(np.float64), evidence.disagreed.astype(np.float64)
    p0 = np.full(np.shape(n), 1.0 - baseline)
    p1 = p0 + margin
    return Test("agreement", p0, p1, k, n, bernoulli_llr(k, n, p0, p1), _undecided(k))


def decide(evidence: Evidence, params: RolloutParams, tests_in_rollout: int | None = None) -> Verdict:
    """The step's verdict from its counts so far: FAIL (roll back), PASS (next step, or promote
    after the last one) or CONTINUE. `tests_in_rollout` (default: signals x steps of `params`)
    is how many tests share alpha."""
    signals = params.signals
    total = tests_in_rollout or len(signals) * len(params.steps)
    lower, upper = wald_bounds(params.alpha, params.beta, total)
    tests = []
    for signal in signals:
        if signal == "failures":
            test = failures_test(evidence, params.failures.margin)
            seen = np.minimum(evidence.champion.requests, evidence.candidate.requests)
        elif signal == "latency":
            test = latency_test(evidence, params.latency.quantile, params.latency.margin)
            seen = np.minimum(evidence.champion.answered, evidence.candidate.answered)
        elif signal == "accuracy":
            test = accuracy_test(evidence, params.accuracy.margin)
            labels = evidence.labels
            seen = np.minimum(labels.champion_labelled, labels.candidate_labelled) if labels else test.n
        else:
            test = agreement_test(evidence, params.agreement.baseline, params.agreement.margin)
            seen = test.n
        ready = seen >= (params.accuracy.min_labels if signal == "accuracy" else params.min_requests)
        state = np.where(ready & (test.llr >= upper), FAIL, np.where(ready & (test.llr <= lower), PASS, CONTINUE))
        tests.append(Test(test.signal, test.p0, test.p1, test.k, test.n, test.llr, state, test.notes))
    states = np.stack([t.state for t in tests])
    overall = np.where((states == FAIL).any(axis=0), FAIL, np.where((states == PASS).all(axis=0), PASS, CONTINUE))
    return Verdict(overall, tests, (lower, upper))

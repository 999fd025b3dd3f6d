"""Simulated rollouts for the decision's error rates (importable: pytest puts tests/ on sys.path).

Thousands of rollouts run side by side: at each poll every undecided rollout gets a batch of
requests drawn from the champion's and the candidate's true behaviour (failure share, latency
distribution, disagreement share), its counts grow as the router would count them (latency into
the router's buckets), and serving.rollout.decision decides on them exactly as it does live.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.rollout.decision import CONTINUE, FAIL, PASS, Arm, Evidence, decide
from serving.rollout.params import RolloutParams
from serving.rollout.router_config import latency_bounds


@dataclass(frozen=True)
class Behaviour:
    """A version's true behaviour: failure share, log-normal latency (median seconds, sigma of the
    log), and (the candidate's) share of predictions whose top class differs from the champion's."""

    failure: float = 0.002
    median_s: float = 0.002
    sigma: float = 0.3
    disagreement: float = 0.02


@dataclass(frozen=True)
class Outcome:
    promoted: int
    rolled_back: int
    limit: int  # reached max_requests in a step undecided (then params.on_limit)
    requests: np.ndarray  # candidate requests each decided rollout took (all steps)

    @property
    def rollouts(self) -> int:
        return self.promoted + self.rolled_back + self.limit

    def rolled_back_share(self, on_limit: str) -> float:
        undecided = self.limit if on_limit == "rollback" else 0
        return (self.rolled_back + undecided) / self.rollouts

    def describe(self) -> str:
        r = self.requests
        return (
            f"promoted {self.promoted}, rolled back {self.rolled_back}, limit {self.limit} of {self.rollouts}; "
            f"candidate requests per decision: median {np.median(r):.0f}, p90 {np.percentile(r, 90):.0f}, "
            f"max {r.max():.0f}"
        )


def _latency_counts(rng: np.random.Generator, n: np.ndarray, behaviour: Behaviour, bounds: np.ndarray) -> np.ndarray:
    """Counts per latency bucket of n[i] answers of each rollout i."""
    counts = np.zeros((len(n), len(bounds)), dtype=np.int64)
    total = int(n.sum())
    if total:
        seconds = behaviour.median_s * np.exp(behaviour.sigma * rng.standard_normal(total))
        buckets = np.minimum(np.searchsorted(bounds, seconds), len(bounds) - 1)
        rows = np.repeat(np.arange(len(n)), n)
        np.add.at(counts, (rows, buckets), 1)
    return counts


def run_step(
    params: RolloutParams,
    champion: Behaviour,
    candidate: Behaviour,
    share: float,
    rollouts: int,
    rng: np.random.Generator,
    batch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of `rollouts` rollouts; returns each one's final state and candidate requests."""
    bounds = latency_bounds()
    shadow = params.mode == "shadow"
    zeros = np.zeros(rollouts, dtype=np.int64)
    c_ok, c_fail, k_ok, k_fail = zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy()
    c_lat = np.zeros((rollouts, len(bounds)), dtype=np.int64)
    k_lat = c_lat.copy()
    compared, disagreed = zeros.copy(), zeros.copy()
    state = np.full(rollouts, CONTINUE, dtype=object)
    live = np.ones(rollouts, dtype=bool)
    while live.any():
        idx = np.flatnonzero(live)
        m = len(idx)
        to_candidate = np.full(m, batch) if shadow else rng.binomial(batch, share / 100.0, m)
        to_champion = np.full(m, batch) if shadow else batch - to_candidate
        for arm_ok, arm_fail, arm_lat, sent, behaviour in (
            (c_ok, c_fail, c_lat, to_champion, champion),
            (k_ok, k_fail, k_lat, to_candidate, candidate),
        ):
            failed = rng.binomial(sent, behaviour.failure)
            arm_fail[idx] += failed
            arm_ok[idx] += sent - failed
            arm_lat[idx] += _latency_counts(rng, sent - failed, behaviour, bounds)
        if shadow:
            both = k_ok[idx] - compared[idx]  # every answered copy is compared (the champion rarely fails)
            compared[idx] += both
            disagreed[idx] += rng.binomial(both, candidate.disagreement)
        evidence = Evidence(
            Arm(c_ok[idx], c_fail[idx], c_lat[idx]),
            Arm(k_ok[idx], k_fail[idx], k_lat[idx]),
            bounds,
            compared[idx] if shadow else None,
            disagreed[idx] if shadow else None,
        )
        verdict = decide(evidence, params)
        state[idx] = verdict.state
        limit = (k_ok[idx] + k_fail[idx] >= params.max_requests) & (verdict.state == CONTINUE)
        state[idx[limit]] = "limit"
        live[idx] = state[idx] == CONTINUE
    return state, k_ok + k_fail


def simulate(
    params: RolloutParams,
    candidate: Behaviour,
    champion: Behaviour = Behaviour(),
    rollouts: int = 500,
    seed: int = 0,
    batch: int = 50,
) -> Outcome:
    """`rollouts` whole rollouts (every step of params.steps) of `candidate` against `champion`."""
    rng = np.random.default_rng(seed)
    requests = np.zeros(rollouts, dtype=np.int64)
    going = np.arange(rollouts)
    promoted = rolled_back = limit = 0
    for share in params.steps:
        per_poll = batch if params.mode == "shadow" else max(batch, int(round(batch * 100 / share)))
        state, used = run_step(params, champion, candidate, share, len(going), rng, per_poll)
        requests[going] += used
        rolled_back += int((state == FAIL).sum())
        limit += int((state == "limit").sum())
        going = going[state == PASS]
    promoted = len(going)
    return Outcome(promoted, rolled_back, limit, requests)

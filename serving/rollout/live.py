"""What a running rollout looks like on Triton's metrics endpoint: the router's counts of the
current step as the decision's Evidence, Triton's own per-version counters beside them, and one
JSON-able snapshot of both (the state file, the Airflow report page, the task's log).

The endpoint is open (no key), like inference; a server that is not the local one gives its URL
in TRITON_METRICS_URL (or the Airflow Connection's extra `metrics_url`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from serving import metrics
from serving.rollout.decision import Arm, Evidence, Labels, Verdict, decide, quantile
from serving.rollout.params import RolloutParams
from serving.rollout.router_config import latency_bounds
from serving.rollout.state import RolloutState, backing_names

ROLES = ("champion", "candidate")


@dataclass(frozen=True)
class Observation:
    evidence: Evidence
    verdict: Verdict
    predictions: dict[str, dict[str, int]]  # role -> top class -> predictions
    pairs: dict[str, int]  # "champion class -> candidate class" -> disagreeing predictions
    skipped: int  # shadow copies not sent (too many on their way)
    triton: dict[str, dict[str, Any]]  # role -> Triton's own counters of that version since it loaded

    def snapshot(self) -> dict[str, Any]:
        """Per version: requests, failures, p50/p95 (ms), top classes; agreement; the test's state."""
        evidence, bounds = self.evidence, self.evidence.bounds
        versions = {}
        for role, arm in (("champion", evidence.champion), ("candidate", evidence.candidate)):
            answered = int(arm.answered)
            versions[role] = {
                "requests": int(arm.requests),
                "failures": int(arm.failed),
                "p50_ms": round(float(quantile(arm.latency, bounds, 0.5)) * 1000, 3) if answered else None,
                "p95_ms": round(float(quantile(arm.latency, bounds, 0.95)) * 1000, 3) if answered else None,
                "classes": self.predictions.get(role, {}),
                "triton": self.triton.get(role, {}),
            }
        agreement = None
        if evidence.compared is not None and evidence.disagreed is not None:
            compared = int(evidence.compared)
            agreement = {
                "compared": compared,
                "disagreed": int(evidence.disagreed),
                "share": round(1 - int(evidence.disagreed) / compared, 5) if compared else None,
                "pairs": dict(sorted(self.pairs.items(), key=lambda item: -item[1])[:20]),
                "skipped": self.skipped,
            }
        return {"versions": versions, "agreement": agreement, "test": self.verdict.to_json()}


def parse(text: str, state: RolloutState) -> tuple[Evidence, dict[str, dict[str, int]], dict[str, int], int]:
    """The router's counts of `state`'s current step in a Prometheus text of Triton's metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    bounds = latency_bounds()
    bucket_of = {f"{b:.6g}": i for i, b in enumerate(bounds)}
    wanted = {"model": state.model, "rollout": state.id, "step": str(state.step)}
    answered = dict.fromkeys(ROLES, 0)
    failed = dict.fromkeys(ROLES, 0)
    latency = {role: np.zeros(len(bounds), dtype=np.int64) for role in ROLES}
    predictions: dict[str, dict[str, int]] = defaultdict(dict)
    pairs: dict[str, int] = {}
    compared = skipped = 0
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("rollout_"):
            continue
        for sample in family.samples:
            labels = sample.labels
            if any(labels.get(key) != value for key, value in wanted.items()) or sample.name.endswith("_created"):
                continue
            value, role = int(sample.value), labels.get("role", "")
            if family.name == "rollout_requests" and role in ROLES:
                (answered if labels.get("outcome") == "answered" else failed)[role] += value
            elif family.name == "rollout_latency" and role in ROLES and labels.get("le") in bucket_of:
                latency[role][bucket_of[labels["le"]]] += value
            elif family.name == "rollout_predictions" and role in ROLES:
                predictions[role][labels.get("class", "?")] = value
            elif family.name == "rollout_compared":
                compared += value
            elif family.name == "rollout_disagreements":
                key = f"{labels.get('champion_class')} -> {labels.get('candidate_class')}"
                pairs[key] = pairs.get(key, 0) + value
            elif family.name == "rollout_shadow_skipped":
                skipped += value
    arms = {role: Arm(np.asarray(answered[role]), np.asarray(failed[role]), latency[role]) for role in ROLES}
    shadow = state.mode == "shadow"
    evidence = Evidence(
        arms["champion"],
        arms["candidate"],
        bounds,
        np.asarray(compared) if shadow else None,
        np.asarray(sum(pairs.values())) if shadow else None,
    )
    return evidence, dict(predictions), pairs, skipped


def label_counts(sample_dir: str | Path, state: RolloutState) -> Labels:
    """Each version's rows kept since the step started whose labels came back, and how many of
    them it answered wrong (serving/live/labels.py)."""
    import datetime as dt

    import pyarrow.compute as pc

    from serving.live.labels import labelled

    names = backing_names(state.model)
    joined = labelled(sample_dir, state.model, [names["champion"], names["candidate"]])
    since = dt.datetime.fromisoformat(state.step_started_at)
    joined = joined.filter(pc.greater_equal(joined["time"], pa.scalar(since, pa.timestamp("us", tz="UTC"))))
    counts = {}
    for role, version in (("champion", state.champion), ("candidate", state.candidate)):
        mine = joined.filter(pc.and_(pc.equal(joined["model"], names[role]), pc.equal(joined["version"], version)))
        wrong = mine.num_rows - int(pc.sum(mine["correct"]).as_py() or 0)
        counts[role] = (np.asarray(mine.num_rows), np.asarray(wrong))
    return Labels(*counts["champion"], *counts["candidate"])


def observe(text: str, state: RolloutState, params: RolloutParams, sample_dir: str | Path | None = None) -> Observation:
    """The current step's evidence and the test's verdict on it, from one read of the metrics (and,
    with labelled accuracy on, of the labels that came back for the sample in `sample_dir`)."""
    evidence, predictions, pairs, skipped = parse(text, state)
    if "accuracy" in params.signals and sample_dir is not None:
        evidence = replace(evidence, labels=label_counts(sample_dir, state))
    verdict = decide(evidence, params, len(params.signals) * len(state.steps))
    names = backing_names(state.model)
    counters = metrics.parse(text)
    triton = {}
    for role, version in (("champion", state.champion), ("candidate", state.candidate)):
        found = counters.get((names[role], version))
        if found is not None:
            triton[role] = found.to_dict()
    return Observation(evidence, verdict, predictions, pairs, skipped, triton)


def read(
    url: str | None,
    state: RolloutState,
    params: RolloutParams,
    timeout_s: float = 5.0,
    sample_dir: str | Path | None = None,
) -> Observation:
    if not url:
        raise metrics.MetricsUnavailable(
            "a rollout reads Triton's metrics: set TRITON_METRICS_URL (or the Connection's extra metrics_url)"
        )
    return observe(metrics.fetch(url, timeout_s), state, params, sample_dir)

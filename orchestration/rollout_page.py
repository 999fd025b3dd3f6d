"""The rollout task's Reports page (served by orchestration/reports_ui.py, behind Airflow's auth):
the live comparison of champion and candidate while it runs, how it ended afterwards.

The task keeps its state and Triton's metrics URL in its XCom `rollout` (orchestration/rollout_task.py);
the page reads the metrics itself at each request, so it is as fresh as the reload: requests,
failures, p50 and p95 per version, agreement and the class pairs that disagree (shadow), the
current step and each signal's test (its log-likelihood ratio between the bounds), and a plot of
both versions' latency distributions.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

PLOT_W, PLOT_H, PAD = 560, 220, 36
COLOURS = {"champion": "#1f77b4", "candidate": "#d62728"}


def live_view(value: Mapping[str, Any]) -> tuple[Any, Any | None, str | None]:
    """(state, observation or None, why there is none) from the task's XCom `rollout`."""
    from serving.metrics import MetricsUnavailable
    from serving.rollout import live
    from serving.rollout.params import RolloutParams
    from serving.rollout.state import RolloutState

    state = RolloutState.model_validate(value["state"])
    if not state.active:
        return state, None, None
    try:
        return state, live.read(value.get("metrics_url"), state, RolloutParams.model_validate(state.params)), None
    except MetricsUnavailable as error:
        return state, None, str(error)


def latency_plot(observation: Any) -> str:
    """Both versions' latency distributions (share of answers at or below x ms, x on a log scale),
    the p95 of each marked, as an inline SVG."""
    from serving.rollout.decision import quantile

    evidence = observation.evidence
    bounds = np.asarray(evidence.bounds)
    arms = {"champion": evidence.champion.latency, "candidate": evidence.candidate.latency}
    used = np.flatnonzero(sum(arms.values()) > 0)
    if len(used) == 0:
        return "<p>No answers yet: nothing to plot.</p>"
    lo, hi = np.log(bounds[max(used[0] - 1, 0)]), np.log(bounds[min(used[-1] + 1, len(bounds) - 1)])

    def x(seconds: float) -> float:
        return PAD + (np.log(seconds) - lo) / ((hi - lo) or 1) * (PLOT_W - 2 * PAD)

    def y(share: float) -> float:
        return PLOT_H - PAD + share * -(PLOT_H - 2 * PAD)

    parts = [
        f'<svg role="img" aria-label="latency distribution per version" width="{PLOT_W}" height="{PLOT_H}" '
        'style="border:1px solid #ccc;font:11px sans-serif">'
    ]
    for share in (0.0, 0.5, 0.95, 1.0):
        parts.append(
            f'<line x1="{PAD}" x2="{PLOT_W - PAD}" y1="{y(share):.1f}" y2="{y(share):.1f}" stroke="#eee"/>'
            f'<text x="2" y="{y(share) + 4:.1f}">{share:g}</text>'
        )
    for role, counts in arms.items():
        total = counts.sum()
        if not total:
            continue
        cumulative = np.cumsum(counts) / total
        points = " ".join(
            f"{x(b):.1f},{y(c):.1f}"
            for b, c in zip(bounds[used[0] : used[-1] + 1], cumulative[used[0] : used[-1] + 1], strict=True)
        )
        p95 = float(quantile(counts, bounds, 0.95))
        parts.append(f'<polyline fill="none" stroke="{COLOURS[role]}" stroke-width="2" points="{points}"/>')
        parts.append(
            f'<line x1="{x(p95):.1f}" x2="{x(p95):.1f}" y1="{PAD}" y2="{PLOT_H - PAD}" stroke="{COLOURS[role]}" '
            f'stroke-dasharray="4 3"/><text x="{x(p95) + 3:.1f}" y="{PAD + (12 if role == "champion" else 26)}" '
            f'fill="{COLOURS[role]}">{role} p95 {p95 * 1000:.2f} ms</text>'
        )
    parts.append(
        f'<text x="{PAD}" y="{PLOT_H - 8}">{np.exp(lo) * 1000:.2f} ms</text>'
        f'<text x="{PLOT_W - PAD - 50}" y="{PLOT_H - 8}">{np.exp(hi) * 1000:.2f} ms</text></svg>'
    )
    return "".join(parts)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table border="1" cellpadding="4" style="border-collapse:collapse"><tr>{head}</tr>{body}</table>'


def render(task_id: str, run_id: str, state: Any, observation: Any | None, problem: str | None) -> str:
    title = f"{task_id} of run {run_id}: {state.mode} rollout of {state.model}"
    parts = [f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"]
    step = f"step {state.step + 1} of {len(state.steps)}" + (
        f" ({state.share:g}% of requests to the candidate)" if state.mode == "canary" else ""
    )
    parts.append(
        f"<p>Version {state.candidate} (candidate) against version {state.champion} (champion); {html.escape(step)}; "
        f"<b>{html.escape(state.status)}</b>"
        + (f" by {html.escape(str(state.decided_by))}: {html.escape(state.reason)}" if state.reason else "")
        + "</p>"
    )
    if problem:
        parts.append(f"<p>Live counts unavailable: {html.escape(problem)}</p>")
    snapshot = observation.snapshot() if observation is not None else state.last
    if snapshot:
        label = "live, this step" if observation is not None else "the last observation"
        versions = snapshot["versions"]
        rows = [[role, v["requests"], v["failures"], v["p50_ms"], v["p95_ms"]] for role, v in versions.items()]
        parts.append(
            f"<h2>Per version ({label})</h2>" + _table(["version", "requests", "failures", "p50 ms", "p95 ms"], rows)
        )
        agreement = snapshot.get("agreement")
        if agreement:
            parts.append(
                f"<h2>Agreement</h2><p>{agreement['compared']} predictions compared, {agreement['disagreed']} "
                f"disagree: agreement {agreement['share']}; copies skipped: {agreement['skipped']}</p>"
                + _table(
                    ["champion class -> candidate class", "predictions"],
                    [[k, v] for k, v in agreement["pairs"].items()],
                )
            )
        test = snapshot["test"]
        rows = [
            [
                t["signal"],
                t["state"],
                f"{t['k']:.0f}/{t['n']:.0f}",
                f"{t['p0']:.4f}",
                f"{t['p1']:.4f}",
                f"{t['llr']:+.2f}",
            ]
            for t in test["tests"]
        ]
        parts.append(
            f"<h2>Sequential test: {html.escape(str(test['state']))}</h2><p>Each signal's log-likelihood ratio "
            f"(LLR) of 'worse by the margin' against 'as good': at or below {test['lower']:+.2f} it passes, at or "
            f"above {test['upper']:+.2f} the candidate is rolled back.</p>"
            + _table(["signal", "state", "seen", "H0 share", "H1 share", "LLR"], rows)
        )
    if observation is not None:
        parts.append("<h2>Latency distribution (this step)</h2>" + latency_plot(observation))
    if state.passed:
        parts.append("<h2>Steps passed</h2><pre>" + html.escape(json.dumps(state.passed, indent=1)[:20000]) + "</pre>")
    parts.append("<h2>Events</h2>" + _table(["event", "at"], [[e.get("event"), e.get("at")] for e in state.events]))
    if state.active:
        parts.append("<p>Promote or abort it in the task's Required Action form; reload for fresh counts.</p>")
    return "\n".join(parts)

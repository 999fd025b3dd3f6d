"""What a rollout does next, from one observation: keep watching, move to the next canary step,
promote, roll back, or wait for a person; and a loop that watches until it ends
(`python -m serving rollout watch`, the live tests). In Airflow the triggerer observes and
decides (orchestration/rollout_trigger.py) and the task applies the action, with the same code.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from serving.rollout import live, operations
from serving.rollout.decision import FAIL, PASS
from serving.rollout.params import RolloutParams
from serving.rollout.state import RolloutState, load_state
from serving.settings import ServingSettings

log = logging.getLogger(__name__)

Kind = Literal["continue", "next_step", "promote", "rollback", "wait"]


@dataclass(frozen=True)
class Action:
    kind: Kind
    decided_by: str = ""  # test | limit
    reason: str = ""


def elapsed_s(state: RolloutState, at: dt.datetime | None = None) -> float:
    """Seconds since the rollout started (its own clock: the limit `rollout.max_hours`)."""
    started = dt.datetime.fromisoformat(state.started_at)
    return ((at or dt.datetime.now(dt.UTC)) - started).total_seconds()


def next_action(state: RolloutState, observation: live.Observation, params: RolloutParams, elapsed: float) -> Action:
    """The test's verdict first; then the limits (candidate requests in the step, the rollout's
    hours), which end it as `on_limit` says."""
    verdict = observation.verdict
    state_now = str(verdict.state)
    if state_now == FAIL:
        return Action("rollback", "test", verdict.reason())
    if state_now == PASS:
        if state.step + 1 < len(state.steps):
            return Action("next_step", "test", verdict.reason())
        return Action("promote", "test", verdict.reason())
    requests = int(observation.evidence.candidate.requests)
    limit = None
    if requests >= params.max_requests:
        limit = f"{requests} candidate requests in step {state.step + 1} without a decision"
    elif elapsed >= params.max_hours * 3600:
        limit = f"{elapsed / 3600:.2f} h without a decision"
    if limit is None:
        return Action("continue")
    reason = f"{limit} (rollout.max_requests {params.max_requests}, max_hours {params.max_hours}): {verdict.reason()}"
    kind: Kind = {"promote": "promote", "rollback": "rollback", "wait": "wait"}[params.on_limit]  # type: ignore[assignment]
    return Action(kind, "limit", reason)


def apply(settings: ServingSettings, state: RolloutState, action: Action, snapshot: dict) -> RolloutState:
    """Carry out `action` on the server and in the state."""
    name = state.model
    if action.kind == "next_step":
        return operations.set_step(settings, name, state.step + 1, {**snapshot, "reason": action.reason})
    if action.kind == "promote":
        operations.record(settings, name, snapshot)
        return operations.promote(settings, name, action.decided_by, action.reason)
    if action.kind == "rollback":
        operations.record(settings, name, snapshot)
        return operations.roll_back(settings, name, action.decided_by, action.reason)
    return operations.record(settings, name, snapshot, "waiting" if action.kind == "wait" else None)


def watch(
    settings: ServingSettings,
    name: str,
    *,
    poll_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_observation: Callable[[RolloutState, live.Observation, Action], None] | None = None,
) -> RolloutState:
    """Observe every `poll_s` (default: the rollout's own `poll_s`) and act, until the rollout
    ends or waits for a person."""
    repo = settings.open_repository()
    while True:
        state = operations.active_state(repo, name)
        params = RolloutParams.model_validate(state.params)
        observation = live.read(settings.client.metrics_url, state, params, sample_dir=settings.sample_dir)
        action = next_action(state, observation, params, elapsed_s(state))
        if on_observation is not None:
            on_observation(state, observation, action)
        state = apply(settings, state, action, observation.snapshot())
        if action.kind != "continue":
            log.info("%s: %s (%s) %s", name, action.kind, action.decided_by, action.reason)
        if not state.active or state.status == "waiting":
            return load_state(repo, name) or state
        sleep(params.poll_s if poll_s is None else poll_s)

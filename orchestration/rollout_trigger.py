"""The rollout's waiting, in Airflow's triggerer: a Trigger that reads Triton's metrics every
`rollout.poll_s` seconds and runs the decision on them (serving/rollout/live.py, driver.py), so
that no worker slot is held during a bake of hours.

It fires once, when there is something to do: the next canary step, promote, roll back, or wait
for a person (a limit reached with `rollout.on_limit: wait`); the task (orchestration/rollout_task.py)
then does it on a worker and, for a new step, defers again. It also fires when the rollout is gone
from the metrics (the router's counts vanished: the server restarted or someone ended it) or the
endpoint stayed unreachable for LOST_AFTER_S. Waiting for a person, it only sleeps until the
approval timeout; the person's answer in the task's form resumes the task directly.

The Trigger holds plain values (the state as JSON, the metrics URL): it needs no Connection and no
access to the model repository. This module is imported when the DAG file is parsed: nothing heavy
at the top.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)

LOST_AFTER_S = 300.0  # metrics unreachable this long: the task decides what to do
# The worker that deferred is reported done by its supervisor only at its next check, every
# `[workers] min_heartbeat_interval` seconds (5 by default). A trigger that fires before that report
# gets the task resumed first, and the late "done" then makes the scheduler fail the resumed task as
# killed externally. So the trigger never fires sooner than this many of those intervals.
SETTLE_INTERVALS = 3


def settle_s() -> float:
    """Seconds a trigger waits before it may fire (see SETTLE_INTERVALS)."""
    from airflow.configuration import conf

    return SETTLE_INTERVALS * conf.getfloat("workers", "min_heartbeat_interval", fallback=5.0)


class RolloutTrigger(BaseTrigger):
    """Fires with {"action", "decided_by", "reason", "snapshot"} when the rollout has something to do."""

    def __init__(
        self,
        state: dict[str, Any],
        metrics_url: str,
        waiting_until: str | None = None,
        poll_s: float | None = None,
        sample_dir: str | None = None,  # the live sample, when labelled accuracy is one of the signals
    ) -> None:
        super().__init__()
        self.state, self.metrics_url, self.waiting_until, self.poll_s = state, metrics_url, waiting_until, poll_s
        self.sample_dir = sample_dir

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "state": self.state,
                "metrics_url": self.metrics_url,
                "waiting_until": self.waiting_until,
                "poll_s": self.poll_s,
                "sample_dir": self.sample_dir,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from serving.metrics import MetricsUnavailable, fetch
        from serving.rollout import driver, live
        from serving.rollout.params import RolloutParams
        from serving.rollout.state import RolloutState

        state = RolloutState.model_validate(self.state)
        params = RolloutParams.model_validate(state.params)
        poll_s = self.poll_s or params.poll_s
        await asyncio.sleep(settle_s())
        if self.waiting_until is not None:
            until = dt.datetime.fromisoformat(self.waiting_until)
            await asyncio.sleep(max(0.0, (until - dt.datetime.now(dt.UTC)).total_seconds()))
            yield TriggerEvent(
                {"action": "rollback", "decided_by": "limit", "reason": f"no one decided by {self.waiting_until}"}
            )
            return
        seen = 0  # the candidate's requests at the last poll: a drop means the counts were reset
        unreachable_since: float | None = None
        while True:
            try:
                text = await asyncio.to_thread(fetch, self.metrics_url)
            except MetricsUnavailable as error:
                now = asyncio.get_running_loop().time()
                unreachable_since = unreachable_since or now
                if now - unreachable_since >= LOST_AFTER_S:
                    yield TriggerEvent({"action": "lost", "reason": str(error)})
                    return
                log.warning("%s; trying again in %.0f s", error, poll_s)
                await asyncio.sleep(poll_s)
                continue
            unreachable_since = None
            observation = await asyncio.to_thread(live.observe, text, state, params, self.sample_dir)
            requests = int(observation.evidence.candidate.requests) + int(observation.evidence.champion.requests)
            if requests < seen:
                yield TriggerEvent({"action": "lost", "reason": "the router's counts were reset: the server restarted"})
                return
            seen = requests
            action = driver.next_action(state, observation, params, driver.elapsed_s(state))
            log.info("%s: %s", state.describe(), observation.verdict.reason())
            if action.kind != "continue":
                yield TriggerEvent(
                    {
                        "action": action.kind,
                        "decided_by": action.decided_by,
                        "reason": action.reason,
                        "snapshot": observation.snapshot(),
                    }
                )
                return
            await asyncio.sleep(poll_s)

"""The push task in a shadow or canary rollout (params `rollout.mode`): put the candidate behind
the router instead of serving it; the `rollout` task (orchestration/rollout_task.py) watches it.
Apart from that task's module so that the push task (orchestration/tasks.py) imports neither it
nor Airflow's operator machinery."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from orchestration.run_values import PushedVersion

log = logging.getLogger(__name__)


def start(root: Path, candidate: str, metrics: str, settings: Any, params: Any) -> PushedVersion:
    """The push task in rollout mode: put the candidate behind the router (or push it directly when
    there is no champion to measure it against)."""
    from serving.rollout.operations import start_rollout

    started = start_rollout(root / candidate, settings, params.rollout, metrics=root / metrics)
    if started.state is None:
        assert started.pushed is not None
        result = started.pushed
        return PushedVersion(
            result.model,
            result.version,
            result.serving,
            result.previous,
            result.status == "pushed",
            round(result.seconds.get("total", 0.0), 2),
        )
    state = started.state
    log.info("%s", state.describe())
    rollout = {"id": state.id, "mode": state.mode, "status": state.status}
    return PushedVersion(state.model, state.candidate, state.champion, state.champion, True, 0.0, rollout)

"""The sweep's result: its best completed trial, and that trial's values as the run's params.yaml.

A pruned or failed trial does not fail the sweep; the sweep fails only when no trial completed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from orchestration.sweep import space
from orchestration.sweep.params import SweepParams
from orchestration.sweep.study import open_study
from pipeline import atomic
from pipeline.errors import StageError


class SweepFailed(StageError):
    """No trial of the sweep completed: nothing to choose from."""


def trials_table(sweep: SweepParams, storage: str, study: str) -> list[dict[str, Any]]:
    """Every trial of the study: number, params (params.yaml values), state, value."""
    return [
        {
            "number": t.number,
            "params": space.decode_params(sweep, t.params),
            "state": t.state.name.lower(),
            "value": t.value if t.state == TrialState.COMPLETE else None,
        }
        for t in open_study(sweep, storage, study).get_trials(deepcopy=False)
    ]


def best(sweep: SweepParams, storage: str, study: str) -> dict[str, Any]:
    """{"number", "params", "value"} of the best complete trial (in the objective's direction)."""
    trials = open_study(sweep, storage, study).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        states = ", ".join(f"t{t.number} {t.state.name.lower()}" for t in trials) or "no trials"
        raise SweepFailed(
            f"sweep {study}: no trial completed ({states}); see each trial's error in the sweep's log "
            "and `dvc exp show`, fix the space (sweep.space) or the data, and run the sweep again"
        )
    pick = max if sweep.objective.direction == "maximize" else min
    winner = pick(complete, key=lambda t: (t.value, -t.number))  # a tie goes to the earlier trial
    return {"number": winner.number, "params": space.decode_params(sweep, winner.params), "value": winner.value}


def write_winner(params_path: str | Path, params: dict[str, Any]) -> None:
    """The winner's values into params.yaml (comments kept), written atomically."""
    path = Path(params_path)
    atomic.write_text(path, space.apply(path.read_text(), params))

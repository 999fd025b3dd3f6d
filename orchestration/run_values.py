"""What the retrain DAG's tasks hand each other through XCom, typed; turned into plain JSON only at
the edge (`to_xcom` when a task returns, `from_xcom` when one reads another's value).

A stage task's value stays DVC's own structure (its `dvc.lock` entry, orchestration/lockfile.py);
the gate's is `stages.gate.Decision.to_json()`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T", bound="_Value")


@dataclass(frozen=True)
class _Value:
    def to_xcom(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_xcom(cls: type[T], value: Mapping[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unexpected keys {unknown} in a task's value")
        return cls(**value)


@dataclass(frozen=True)
class PreparedRun(_Value):
    """prepare_workspace's value: the run's commit on the workspace's git remote."""

    commit: str
    ref: str  # refs/retrain/runs/<run>
    base: str | None  # the published commit it builds on (None: the first run)
    as_of: str | None  # embed.as_of in demo mode
    changed: list[str]  # files changed since the published run (the first 50)
    removed: list[str]
    source_commit: str | None  # the project's own HEAD
    workspace: str  # the checkout prepare worked in
    note: str = ""  # the Trigger form's note
    overrides: dict[str, str | None] = field(default_factory=dict)  # params keys the Trigger form set
    pinned: dict[str, Any] | None = None  # a data source in S3: what was pinned (source, objects, bytes)
    # With a sweep: its winner (study, trial, params, objective), whose params this run's commit holds
    sweep: dict[str, Any] | None = None


@dataclass(frozen=True)
class PushedVersion(_Value):
    """push's value: what the push did on Triton."""

    model: str
    version: int  # the version holding the candidate's content
    serving: int | None  # what serves after the push
    previous: int | None  # what served before
    created: bool  # a new version was stored (False: the same content was there already)
    seconds: float
    rollout: dict[str, Any] | None = None  # shadow/canary: the rollout (id, mode, status; how it ended)


@dataclass(frozen=True)
class ServedEvent(_Value):
    """The extra of the served-model asset event (`triton://<model>`): what serves, from which run."""

    model: str
    version: int
    previous: int | None
    created: bool
    git_tag: str  # the tag publish gives this version
    git_commit: str | None  # the sources it was built from (its model card's)
    metrics: dict[str, Any]  # evaluate's test metrics
    data: dict[str, Any]  # the data it was trained on: DVC md5s (its model card's)
    run_id: str
    rollout: dict[str, Any] | None = None  # the rollout's outcome (status, decided_by, reason), if one ran

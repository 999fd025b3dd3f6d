"""The `sweep:` section of params.yaml: which `train.*` keys a hyper-parameter sweep searches, how
(Optuna's grid, random or TPE sampler), how many trials, how many at once, what it maximises or
minimises, and when a trial whose curve is behind the others' is stopped (the pruner).

Its owner is the sweep (orchestration/sweep/); no DVC stage reads it, so editing it reruns no stage.
Whether every value of the space fits `train:` is checked against the train schema by
`ProjectParams` (orchestration/params.py) through `space_problems` below.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from pipeline.params import Positive, Section, TrainParams

Number = int | float


class Dimension(Section):
    """One searched key: either `choices` (any YAML values, lists included) or a range `low`..`high`
    (ints when both bounds are ints), on a log scale (`log`) or in steps (`step`)."""

    choices: Annotated[list[Any], Field(min_length=1)] | None = None
    low: Number | None = None
    high: Number | None = None
    log: bool = False
    step: Annotated[Number, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None and (ranged or self.log or self.step is not None):
            raise ValueError("a dimension is either `choices` or a range `low`/`high` (+ `log`, `step`), not both")
        if self.choices is None:
            if self.low is None or self.high is None:
                raise ValueError("a dimension needs `choices`, or both `low` and `high`")
            if self.low > self.high:
                raise ValueError(f"low {self.low} is above high {self.high}")
            if self.log and self.step is not None:
                raise ValueError("`log` and `step` cannot be combined (Optuna samples a log range continuously)")
            if self.log and self.low <= 0:
                raise ValueError(f"a log range needs low > 0, got {self.low}")
            if self.is_int and self.step is not None and not isinstance(self.step, int):
                raise ValueError(f"an int range (low and high are ints) needs an int step, got {self.step}")
        return self

    @property
    def is_int(self) -> bool:
        """A range of ints: both bounds are ints (bools are not numbers here)."""
        return isinstance(self.low, int) and isinstance(self.high, int)

    @property
    def gridded(self) -> bool:
        """The grid sampler can enumerate it: choices, or a stepped range."""
        return self.choices is not None or self.step is not None


class ObjectiveParams(Section):
    """What the sweep optimises: a key of the trial's train metrics (dvclive/train/metrics.json),
    nested keys joined with '/' (`best/val_accuracy`: the kept epoch's validation accuracy)."""

    metric: Annotated[str, Field(min_length=1)] = "best/val_accuracy"
    direction: Literal["maximize", "minimize"] = "maximize"


class PrunerParams(Section):
    """Optuna's MedianPruner on the per-epoch DVCLive values of `metric`: a trial is stopped when its
    value at an epoch is worse than the median of the earlier trials' values at that epoch."""

    enabled: bool = True
    warmup_epochs: Annotated[int, Field(ge=0)] = 2  # epochs of every trial that are never judged
    min_trials: Annotated[int, Field(ge=0)] = 2  # finished trials needed before any trial is pruned
    metric: Annotated[str, Field(min_length=1)] = "val_accuracy"  # a per-epoch DVCLive metric of train


# A per-epoch metric that is better when lower, or higher: the pruner judges it in the objective's
# direction, so the two must agree (those this project logs; another name is taken as given).
_LOWER_IS_BETTER = ("loss",)


class SweepParams(Section):
    """The `sweep:` section (docs/sweeps.md)."""

    enabled: bool = False
    sampler: Literal["grid", "random", "tpe"] = "tpe"
    trials: Positive = 8
    parallel: Positive = 2
    seed: int = 0
    objective: ObjectiveParams = ObjectiveParams()
    pruner: PrunerParams = PrunerParams()
    storage: Annotated[str, Field(min_length=1)] | None = None
    space: dict[str, Dimension] = {}
    # Trials run first, in order, when the study is created (e.g. today's params, as a baseline); keys
    # of `space`, a choice among its choices, a range's value may lie outside it. The rest are sampled.
    enqueue: list[dict[str, Any]] = []

    @model_validator(mode="after")
    def _check(self) -> SweepParams:
        for key in self.space:
            if not key.startswith("train.") or any(not part for part in key.split(".")):
                raise ValueError(
                    f"space key {key!r}: a sweep searches `train.*` keys only (dotted, e.g. train.optimizer.lr)"
                )
        if self.sampler == "grid":
            ranged = [key for key, dim in self.space.items() if not dim.gridded]
            if ranged:
                raise ValueError(
                    f"space {ranged}: the grid sampler needs `choices` or a stepped range (`step`) for every key"
                )
        lower = any(word in self.pruner.metric for word in _LOWER_IS_BETTER)
        if self.pruner.enabled and lower != (self.objective.direction == "minimize"):
            raise ValueError(
                f"pruner.metric {self.pruner.metric!r} is judged in the objective's direction "
                f"({self.objective.direction}): pick a per-epoch metric that is better the same way"
            )
        for i, trial in enumerate(self.enqueue):
            unknown = sorted(set(trial) - set(self.space))
            if unknown:
                raise ValueError(f"enqueue[{i}]: {unknown} are not keys of the space")
            for key, value in trial.items():
                choices = self.space[key].choices
                if choices is not None and value not in choices:
                    raise ValueError(f"enqueue[{i}]: {key} = {value!r} is none of its choices {choices}")
        if self.enabled and not self.space:
            raise ValueError("sweep.enabled needs a `space` with at least one train.* key")
        return self


def _with(train: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of the `train:` mapping with the dotted key (without `train.`) set."""
    copy = json.loads(json.dumps(train))
    *parents, leaf = dotted.split(".")
    node = copy
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value
    return copy


def space_problems(sweep: SweepParams, train: TrainParams) -> list[str]:
    """What is wrong with the space against the current train params: each choice and both bounds
    of each range applied alone to `train:` must pass the train schema."""
    base = train.model_dump(mode="json")
    problems: list[str] = []
    for key, dim in sweep.space.items():
        values = dim.choices if dim.choices is not None else [dim.low, dim.high]
        values = [*values, *(trial[key] for trial in sweep.enqueue if key in trial)]
        for value in values:
            try:
                TrainParams.model_validate(_with(base, key.removeprefix("train."), value))
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(["train", *map(str, first["loc"])])
                reason = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
                problems.append(f"sweep.space[{key!r}]: value {value!r} does not fit {where}: {reason}")
    return problems

"""The `rollout:` section of params.yaml: how a pushed candidate meets live traffic.

Its own schema (no DVC stage reads it, so no stage reruns when it changes). `direct` is the
default and today's push: the candidate serves every request once verified. `shadow` and `canary`
put a router model in front of the model's name for the length of the rollout
(serving/backend/router.py) and let a sequential test on live signals decide
(serving/rollout/decision.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.params import Params, Positive, Section, parse_as

Rate = Annotated[float, Field(gt=0.0, lt=1.0)]


class FailureParams(Section):
    """Failed requests: the candidate's share against the champion's."""

    margin: Rate = 0.02  # absolute: a candidate failing this much more often than the champion is rolled back


class LatencyParams(Section):
    """Latency at a quantile: the candidate's against the champion's, under the same traffic."""

    quantile: Annotated[float, Field(ge=0.5, lt=1.0)] = 0.95  # which latency quantile is compared (0.95 = p95)
    margin: Annotated[float, Field(gt=0.0, le=10.0)] = (
        0.2  # relative: this much slower there (0.2 = 20%) is rolled back
    )


class AgreementParams(Section):
    """Shadow mode: the share of predictions whose top class is the champion's."""

    baseline: Rate = 0.98  # agreement expected of an equal candidate (a retrain with another seed)
    margin: Rate = 0.01  # absolute: agreeing this much less (0.01 = 1 point below the baseline) is rolled back


class AccuracyParams(Section):
    """Labelled accuracy: the candidate's share of wrong answers against the champion's, on the
    kept requests whose labels came back (docs/live.md)."""

    min_labels: Annotated[int, Field(ge=0)] = (
        0  # labelled rows each version needs in a step before this signal decides; 0 = off
    )
    margin: Rate = 0.02  # absolute: 2 points more wrong answers than the champion is rolled back


class RolloutParams(Section):
    """How a push meets live traffic: direct (today's push), shadow or canary, decided by a
    sequential test with the error rates and margins below."""

    mode: Literal["direct", "shadow", "canary"] = "direct"
    canary_steps: list[Annotated[float, Field(gt=0.0, lt=100.0)]] = [5.0, 25.0, 50.0]
    poll_s: Annotated[float, Field(gt=0.0)] = 10.0
    min_requests: Positive = 50
    max_requests: Positive = 50000
    max_hours: Annotated[float, Field(gt=0.0)] = 24.0
    on_limit: Literal["promote", "rollback", "wait"] = "rollback"
    alpha: Rate = 0.05
    beta: Rate = 0.025
    shadow_in_flight: Positive = 64
    failures: FailureParams = FailureParams()
    latency: LatencyParams = LatencyParams()
    agreement: AgreementParams = AgreementParams()
    accuracy: AccuracyParams = AccuracyParams()

    @model_validator(mode="after")
    def _check(self) -> RolloutParams:
        steps = self.canary_steps
        if not steps or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"canary_steps must be one or more increasing percentages below 100, got {steps}")
        if self.agreement.baseline - self.agreement.margin <= 0.0:
            raise ValueError("agreement.margin must be smaller than agreement.baseline")
        return self

    @property
    def steps(self) -> list[float]:
        """The candidate's share of requests (percent) at each step: one step in shadow mode (it
        answers no client), canary_steps in canary mode; passing the last step promotes it."""
        return [0.0] if self.mode == "shadow" else list(self.canary_steps)

    @property
    def signals(self) -> list[str]:
        """The live signals the decision tests in this mode, and labelled accuracy when it is on
        (accuracy.min_labels)."""
        signals = ["failures", "latency", "agreement"] if self.mode == "shadow" else ["failures", "latency"]
        return signals + (["accuracy"] if self.accuracy.min_labels else [])


def rollout_params(params: Params, source: str = "params.yaml") -> RolloutParams:
    """The `rollout:` section of the params a command loaded, checked."""
    return parse_as(RolloutParams, params.rollout, source, "rollout")

"""Check results: one per expectation, summed over batches, and the tally the verdict reads."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.contract import FeatureContract
from pipeline.validation.reasons import is_row_check


@dataclass(frozen=True)
class CheckResult:
    view: str
    name: str
    expectation: str
    success: bool
    observed: Any = None
    unexpected_count: int = 0
    examples: list[Any] = field(default_factory=list)
    row_level: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def check_result(view: str, name: str, res: Any, examples: list[Any] | None = None) -> CheckResult:
    info = res.result or {}
    return CheckResult(
        view=view,
        name=name,
        expectation=res.expectation_config.type,
        success=bool(res.success),
        observed=info.get("observed_value"),
        unexpected_count=int(info.get("unexpected_count") or 0),
        examples=list(info.get("partial_unexpected_list") or [])[:5] if examples is None else examples,
        row_level=view == "rows" and is_row_check(name),
        details=dict(info.get("details") or {}),
    )


@dataclass
class RowCheck:
    """A row-level check's results summed over the batches seen so far."""

    view: str
    name: str
    expectation: str = ""
    unexpected_count: int = 0
    examples: list[Any] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, result: CheckResult | RowCheck) -> None:
        """Add a batch's result, or the sum of other batches'."""
        self.expectation = result.expectation
        self.unexpected_count += result.unexpected_count
        self.examples.extend(result.examples[: 5 - len(self.examples)])
        self.details = self.details or result.details

    def result(self) -> CheckResult:
        return CheckResult(
            self.view,
            self.name,
            self.expectation,
            self.unexpected_count == 0,
            None,
            self.unexpected_count,
            self.examples,
            True,
            self.details,
        )


@dataclass
class Tally:
    """What the rows said, summed over every batch: the inputs of the verdict."""

    checks: list[CheckResult]
    rows_in: int
    quarantined: int
    reasons: Counter
    first_failures: dict[str, tuple[int, str]]  # check name -> (first row failing it, its reason)
    columns: list[str]
    features: int
    contracts: list[FeatureContract] = field(default_factory=list)

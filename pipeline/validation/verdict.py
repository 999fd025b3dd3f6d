"""The verdict on a validated table: metrics and report, or a failure naming every problem."""

from __future__ import annotations

import re
from typing import Any

from pipeline.errors import StageError
from pipeline.params import CleanParams, DataParams
from pipeline.tables import feature_columns
from pipeline.validation.profile import expected_features
from pipeline.validation.reasons import ROW_REASONS, reason_text
from pipeline.validation.report import render_report
from pipeline.validation.results import CheckResult, Tally


class ValidationFailed(StageError):
    """The raw table failed validation; nothing was written."""


def judge(tally: Tally, contract: DataParams, params: CleanParams) -> tuple[dict[str, Any], str]:
    """Metrics and the HTML report of a validated table, or ValidationFailed naming every problem."""
    share = tally.quarantined / max(tally.rows_in, 1)
    summary = {
        "rows_in": tally.rows_in,
        "rows_kept": tally.rows_in - tally.quarantined,
        "rows_quarantined": tally.quarantined,
        "quarantined_share": round(share, 6),
    }
    # In the suite's order, as GX reports the checks.
    reasons = {reason_text(c.name): tally.reasons[reason_text(c.name)] for c in tally.checks if c.row_level}
    reasons = {text: count for text, count in reasons.items() if count}
    report = render_report(tally.checks, summary, reasons, [c.describe() for c in tally.contracts])
    problems = [describe_failure(c, contract, tally.columns) for c in tally.checks if not c.success and not c.row_level]
    if share > params.max_quarantine_share:
        examples = [
            f"{tally.reasons[reason_text(name)]} x {reason_text(name)} (e.g. row {row}: {text})"
            for name in [*ROW_REASONS, *sorted(set(tally.first_failures) - set(ROW_REASONS))]
            if name in tally.first_failures
            for row, text in [tally.first_failures[name]]
        ]
        problems.append(
            f"{share:.1%} of rows would be quarantined, above clean.max_quarantine_share="
            f"{params.max_quarantine_share:.1%}: " + "; ".join(examples)
        )
    if problems:
        raise validation_failed(problems)
    metrics = {**summary, "reasons": reasons, "features": tally.features}
    categorical = sum(c.kind == "categorical" for c in tally.contracts)
    if categorical:  # tables without them keep the metrics they always had
        metrics["categorical_features"] = categorical
    return metrics, report


def validation_failed(problems: list[str]) -> ValidationFailed:
    return ValidationFailed(
        "raw table failed validation:\n  - " + "\n  - ".join(problems) + "\nFix the data (or the contract in "
        "params.yaml `data`/`clean`) and rerun."
    )


def _natural(name: str) -> list:
    """Sort key that puts px_2 before px_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def describe_failure(check: CheckResult, contract: DataParams, columns: list[str]) -> str:
    """One line a person can act on: which check, which column, an example value."""
    if check.name == "label column present":
        return f"label column {contract.label!r} is missing (data.label in params.yaml names it)"
    if check.name == "no unexpected columns":
        mismatched = check.details.get("mismatched", {})
        named = ", ".join(
            f"{what} {sorted(map(str, names), key=_natural)[:5]}"
            for what, names in (
                ("missing", mismatched.get("missing") or []),
                ("unexpected", mismatched.get("unexpected") or []),
            )
            if names
        )
        return (
            f"columns do not match the contract: {named} "
            f"(features are the columns starting with {contract.feature_prefix!r})"
        )
    if check.name == "enough rows":
        return f"too few rows: {check.observed} (clean.min_rows requires more)"
    if check.name == "feature count matches image_shape":
        features = feature_columns(columns, contract)
        expected = expected_features(features, contract)
        missing = [c for c in expected if c not in set(features)]
        unexpected = [c for c in columns if c != contract.label and c not in set(expected)]
        named = "".join(
            f"; {what} {names[:5]}{' ...' if len(names) > 5 else ''}"
            for what, names in (("missing", missing), ("unexpected", unexpected))
            if names
        )
        return (
            f"expected {contract.n_features} feature columns for image_shape {contract.image_shape} plus "
            f"{contract.label!r}, found {len(features)} feature columns ({check.observed} columns in all){named}"
        )
    if check.name == "features are numeric":
        return f"non-numeric feature column(s) {check.examples} (wrong type; every feature must be a number)"
    if check.name == "data.columns names feature columns":
        return (
            f"data.columns names {check.observed}, which are not feature columns of the table "
            f"(features are the columns starting with {contract.feature_prefix!r}); fix the names in params.yaml"
        )
    if check.name == "duplicate share within limit":
        return f"duplicate share {check.observed:.1%} exceeds clean.max_duplicate_share"
    return f"{check.name} failed (observed {check.observed!r}, examples {check.examples})"

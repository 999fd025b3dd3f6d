"""Great Expectations suites built from the data contract in params.yaml.

GX checks three small views of the raw table rather than every cell one expectation at a time, so
an MNIST-sized table (785 columns) validates in a second:

- `table`:   the raw table itself, table-level expectations (columns, row count);
- `columns`: one row per feature column with its dtype (a wrong type fails the table);
- `rows`:    one row per raw row with its label and a profile of its features (nulls, min, max,
             non-finite count, duplicate flag). Failures here are row-level: GX's unexpected index
             list says which rows go to quarantine.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.params import CleanParams, DataParams
from pipeline.tables import feature_columns

log = logging.getLogger(__name__)

ROW_REASONS = {
    "label_not_null": "missing label",
    "label_in_set": "unknown label",
    "no_null_features": "missing feature value",
    "finite_features": "non-finite feature value",
    "features_above_min": "feature value below range",
    "features_below_max": "feature value above range",
    "not_duplicate": "exact duplicate of an earlier row",
}


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


@dataclass(frozen=True)
class ValidationOutcome:
    checks: list[CheckResult]
    bad_rows: dict[int, list[str]]  # row position -> names of the row-level checks it failed

    @property
    def table_failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and not c.row_level]


def row_profile(table: pd.DataFrame, features: list[str], label: str, chunk: int = 8_192) -> pd.DataFrame:
    """One row per table row: label, null count, min, max, non-finite count, duplicate flag.

    Works through the rows in chunks so a 700k x 784 table never exists as one float copy.
    """
    n = len(table)
    nulls = np.zeros(n, np.int32)
    nonfinite = np.zeros(n, np.int32)
    lo = np.full(n, np.inf, np.float64)
    hi = np.full(n, -np.inf, np.float64)
    for start in range(0, n, chunk):
        part = table.iloc[start : start + chunk][features].to_numpy()
        if part.shape[1] == 0:
            continue
        stop = start + len(part)
        if part.dtype.kind in "iu":  # integer pixels: no NaN or inf possible, skip the float copy
            lo[start:stop], hi[start:stop] = part.min(axis=1), part.max(axis=1)
            continue
        part = (
            part.astype(np.float64)
            if part.dtype != object
            else pd.DataFrame(part).to_numpy(np.float64, na_value=np.nan)
        )
        isnan = np.isnan(part)
        isinf = np.isinf(part)
        nulls[start:stop] = isnan.sum(axis=1)
        nonfinite[start:stop] = isinf.sum(axis=1)
        finite = ~(isnan | isinf)
        lo[start:stop] = np.where(finite, part, np.inf).min(axis=1)
        hi[start:stop] = np.where(finite, part, -np.inf).max(axis=1)
    return pd.DataFrame(
        {
            "label": table[label].to_numpy(),
            "null_features": nulls,
            "nonfinite_features": nonfinite,
            "feature_min": lo,
            "feature_max": hi,
            "duplicate": table.duplicated(keep="first").to_numpy(),
        }
    )


def expected_features(features: list[str], contract: DataParams) -> list[str]:
    """The feature names the contract expects, given the ones the table has.

    Image rows are numbered pixels (`px_0`..`px_63`): a missing or renamed one shifts every later
    pixel, so when every feature is the prefix plus a number the full numbered set is expected
    (numbered from 0, or from 1 when that fits the table better). Otherwise the contract names no
    columns and the table's own features are expected.
    """
    n = contract.n_features
    pattern = re.compile(re.escape(contract.feature_prefix) + r"(\d+)")
    numbers = [m and int(m.group(1)) for m in map(pattern.fullmatch, features)]
    if n is None or not features or None in numbers:
        return features
    present = set(features)

    def numbered(base: int) -> list[str]:
        return [f"{contract.feature_prefix}{i}" for i in range(base, base + n)]

    return min(numbered(0), numbered(1), key=lambda names: len(present.symmetric_difference(names)))


def _expectations(contract: DataParams, clean: CleanParams, features: list[str]) -> dict[str, list]:
    import great_expectations as gx

    E = gx.expectations
    expected_columns = [contract.label, *expected_features(features, contract)]
    table_checks = [
        ("label column present", E.ExpectColumnToExist(column=contract.label)),
        (
            "no unexpected columns",
            E.ExpectTableColumnsToMatchSet(column_set=expected_columns, exact_match=True),
        ),
        ("enough rows", E.ExpectTableRowCountToBeBetween(min_value=clean.min_rows)),
    ]
    if contract.n_features is not None:
        table_checks.append(
            (
                "feature count matches image_shape",
                E.ExpectTableColumnCountToEqual(value=contract.n_features + 1),
            )
        )
    column_checks = [("features are numeric", E.ExpectColumnValuesToBeInSet(column="numeric", value_set=[True]))]
    row_checks = [
        ("label_not_null", E.ExpectColumnValuesToNotBeNull(column="label")),
        ("label_in_set", E.ExpectColumnValuesToBeInSet(column="label", value_set=list(contract.classes))),
        ("no_null_features", E.ExpectColumnValuesToBeBetween(column="null_features", max_value=0)),
        ("finite_features", E.ExpectColumnValuesToBeBetween(column="nonfinite_features", max_value=0)),
        ("not_duplicate", E.ExpectColumnValuesToBeInSet(column="duplicate", value_set=[False])),
        (
            "duplicate share within limit",
            E.ExpectColumnMeanToBeBetween(column="duplicate", max_value=clean.max_duplicate_share),
        ),
    ]
    if contract.value_range is not None:
        lo, hi = contract.value_range
        row_checks += [
            ("features_above_min", E.ExpectColumnValuesToBeBetween(column="feature_min", min_value=lo)),
            ("features_below_max", E.ExpectColumnValuesToBeBetween(column="feature_max", max_value=hi)),
        ]
    return {"table": table_checks, "columns": column_checks, "rows": row_checks}


def _run_view(context, view: str, checks: list, frame: pd.DataFrame) -> list[tuple[str, Any]]:
    import great_expectations as gx

    asset = context.data_sources.add_pandas(f"{view}_source").add_dataframe_asset(view)
    batch = asset.add_batch_definition_whole_dataframe(f"{view}_batch")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{view}_suite"))
    for _, expectation in checks:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=view, data=batch, suite=suite))
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")
    # GX keeps the suite's order; pair results back with our names by expectation id.
    by_id = {r.expectation_config.id: r for r in result.results}
    return [(name, by_id[exp.id]) for name, exp in checks]


def _silent_context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate(table: pd.DataFrame, contract: DataParams, clean: CleanParams) -> ValidationOutcome:
    """Run the suites; table-level failures and the rows that failed row-level checks."""
    features = feature_columns(list(table.columns), contract)
    checks = _expectations(contract, clean, features)
    columns = pd.DataFrame({"column": features, "numeric": [pd.api.types.is_numeric_dtype(table[c]) for c in features]})
    views = {"table": table, "columns": columns}
    if columns["numeric"].all() and contract.label in table:
        views["rows"] = row_profile(table, features, contract.label)
    context = _silent_context()
    outcome: list[CheckResult] = []
    bad_rows: dict[int, list[str]] = {}
    for view, frame in views.items():
        for name, res in _run_view(context, view, checks[view], frame):
            info = res.result or {}
            unexpected = info.get("unexpected_index_list") or []
            row_level = view == "rows" and name in ROW_REASONS
            if view == "columns":
                examples = [columns["column"].iloc[i] for i in unexpected[:5]]
            else:
                examples = list(info.get("partial_unexpected_list") or [])[:5]
            outcome.append(
                CheckResult(
                    view=view,
                    name=name,
                    expectation=res.expectation_config.type,
                    success=bool(res.success),
                    observed=info.get("observed_value"),
                    unexpected_count=int(info.get("unexpected_count") or 0),
                    examples=examples,
                    row_level=row_level,
                    details=dict(info.get("details") or {}),
                )
            )
            if row_level:
                for index in unexpected:
                    bad_rows.setdefault(int(index), []).append(name)
    return ValidationOutcome(outcome, bad_rows)


def row_reason(table: pd.DataFrame, row: int, failed: list[str], contract: DataParams) -> str:
    """A readable reason for one quarantined row, naming a column and its value."""
    features = feature_columns(list(table.columns), contract)
    values = table.iloc[row]
    parts = []
    for name in failed:
        text = ROW_REASONS[name]
        if name == "label_in_set":
            text += f" {values[contract.label]!r}"
        elif name in ("no_null_features", "finite_features", "features_above_min", "features_below_max"):
            feats = pd.to_numeric(values[features], errors="coerce").astype(float)
            if name == "no_null_features":
                bad = feats[feats.isna()]
            elif name == "finite_features":
                bad = feats[np.isinf(feats)]
            elif name == "features_above_min":
                bad = feats[feats < contract.value_range[0]]
            else:
                bad = feats[feats > contract.value_range[1]]
            if len(bad):
                text += f": {bad.index[0]}={bad.iloc[0]:g}"
                if contract.value_range is not None and name.startswith("features_"):
                    text += f" outside [{contract.value_range[0]:g}, {contract.value_range[1]:g}]"
        parts.append(text)
    return "; ".join(parts)


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
    if check.name == "duplicate share within limit":
        return f"duplicate share {check.observed:.1%} exceeds clean.max_duplicate_share"
    return f"{check.name} failed (observed {check.observed!r}, examples {check.examples})"


def render_report(checks: list[CheckResult], summary: dict[str, Any], reasons: dict[str, int]) -> str:
    """A self-contained HTML page: summary, every expectation with its outcome, quarantine reasons."""
    esc = html.escape

    def row(c: CheckResult) -> str:
        status = "pass" if c.success else ("quarantined" if c.row_level else "FAIL")
        return (
            f"<tr class='{status.lower()}'><td>{esc(c.view)}</td><td>{esc(c.name)}</td>"
            f"<td><code>{esc(c.expectation)}</code></td><td>{status}</td>"
            f"<td>{esc(str(c.observed)) if c.observed is not None else ''}</td>"
            f"<td>{c.unexpected_count}</td><td>{esc(', '.join(map(str, c.examples)))}</td></tr>"
        )

    summary_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in summary.items())
    reason_rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in reasons.items()) or (
        "<tr><td colspan=2>none</td></tr>"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Data validation report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
tr.pass td:nth-child(4) {{ color: #17692b; }}
tr.fail td:nth-child(4) {{ color: #b00020; font-weight: bold; }}
tr.quarantined td:nth-child(4) {{ color: #a35c00; }}
</style></head><body>
<h1>Data validation report</h1>
<h2>Summary</h2><table>{summary_rows}</table>
<h2>Expectations (Great Expectations)</h2>
<table><tr><th>view</th><th>check</th><th>expectation</th><th>result</th><th>observed</th>
<th>unexpected</th><th>examples</th></tr>{"".join(row(c) for c in checks)}</table>
<h2>Quarantine reasons</h2><table><tr><th>reason</th><th>rows</th></tr>{reason_rows}</table>
</body></html>
"""

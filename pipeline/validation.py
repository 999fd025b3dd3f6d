"""Great Expectations suites built from the data contract in params.yaml, run batch by batch.

GX checks small views of the raw table rather than every cell one expectation at a time, so an
MNIST-sized table (785 columns) validates at the speed the rows can be read:

- `table`:   table-level expectations: the columns (checked on the schema, before any row is
             read) and the row count (checked once every batch has been counted);
- `columns`: one row per feature column with its kind (a wrong type fails the table);
- `rows`:    one row per raw row with its label and a profile of its features (nulls, min, max,
             non-finite count, duplicate flag), built and validated one batch at a time with the
             same suite. Failures here are row-level: GX's unexpected index list says which rows go
             to quarantine. The duplicate share is judged once, over every batch.

`StreamValidation` holds the GX context and accumulates the per-batch results into one result
per check, which reads as if GX had seen the whole table at once. The column descriptions
(`ColumnSpec`: role, kind and the column's contract, `pipeline.contract`) decide what the profile
counts: a gap in a column whose missing-value policy fills it is not one; a categorical column
counts only its gaps, and one with declared categories adds its values to the profile under
`categories:<column>`, checked by GX against the set (an undeclared value quarantines the row).
"""

from __future__ import annotations

import html
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.contract import FeatureContract, category_values, feature_contracts, unknown_columns
from pipeline.errors import StageError
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
CATEGORY_CHECK = "categories:"  # + column name: a row-level check of one categorical column's values
CATEGORY_REASON = "undeclared category"


def reason_text(name: str) -> str:
    """The quarantine reason of a row-level check."""
    return CATEGORY_REASON if name.startswith(CATEGORY_CHECK) else ROW_REASONS[name]


def is_row_check(name: str) -> bool:
    return name in ROW_REASONS or name.startswith(CATEGORY_CHECK)


# Checks that need every batch: judged once at the end, on what the batches accumulated.
WHOLE_TABLE_CHECKS = ("enough rows", "duplicate share within limit")


class ValidationFailed(StageError):
    """The raw table failed validation; nothing was written."""


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
class ColumnSpec:
    """One column of the raw table as the contract sees it."""

    name: str
    role: Literal["label", "feature", "other"]
    # What the row profile does with it; "other" = a type the contract cannot take (a wrong type).
    kind: Literal["numeric", "categorical", "other"]
    contract: FeatureContract | None = None  # features only


def describe_columns(schema: pa.Schema, contract: DataParams) -> list[ColumnSpec]:
    features = {c.name: c for c in feature_contracts(schema, contract)}

    def kind(t: pa.DataType, feature: FeatureContract | None) -> Literal["numeric", "categorical", "other"]:
        if feature is not None and feature.kind == "categorical":
            return "categorical"  # text, or numbers used as codes (read as their text)
        numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
        return "numeric" if numeric else "other"

    return [
        ColumnSpec(
            f.name,
            "label" if f.name == contract.label else "feature" if f.name in features else "other",
            kind(f.type, features.get(f.name)),
            features.get(f.name),
        )
        for f in schema
    ]


def profile_batch(
    batch: pa.RecordBatch,
    label: str,
    features: list[str],
    gaps_allowed: frozenset[str] = frozenset(),
    categorical: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """One row per row of the batch: label, null count, min, max, non-finite count.

    Column by column, so no batch-sized float copy exists; integer columns without nulls are used
    as they are (no NaN or inf possible). A gap in a column of `gaps_allowed` (its missing-value
    policy fills it) is not counted; `categorical` columns count only their gaps."""
    n = batch.num_rows
    nulls = np.zeros(n, np.int32)
    nonfinite = np.zeros(n, np.int32)
    lo = np.full(n, np.inf, np.float64)
    hi = np.full(n, -np.inf, np.float64)
    for name in features:
        column = batch.column(name)
        if name in categorical:
            if name not in gaps_allowed:
                nulls += pd.isna(category_values(column)).astype(np.int32)
            continue
        if column.null_count == 0 and pa.types.is_integer(column.type):
            values = column.to_numpy()
            np.minimum(lo, values, out=lo)
            np.maximum(hi, values, out=hi)
            continue
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls are NaN
        isnan, isinf = np.isnan(values), np.isinf(values)
        if name not in gaps_allowed:
            nulls += isnan
        nonfinite += isinf
        bad = isnan | isinf
        np.minimum(lo, np.where(bad, np.inf, values), out=lo)
        np.maximum(hi, np.where(bad, -np.inf, values), out=hi)
    return pd.DataFrame(
        {
            "label": batch.column(label).to_numpy(zero_copy_only=False),
            "null_features": nulls,
            "nonfinite_features": nonfinite,
            "feature_min": lo,
            "feature_max": hi,
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


def expectations(
    contract: DataParams, clean: CleanParams, features: list[str], categories: dict[str, list[str]] | None = None
) -> dict[str, list]:
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
    for name, allowed in (categories or {}).items():
        row_checks.append(
            (CATEGORY_CHECK + name, E.ExpectColumnValuesToBeInSet(column=CATEGORY_CHECK + name, value_set=allowed))
        )
    if contract.value_range is not None:
        lo, hi = contract.value_range
        row_checks += [
            ("features_above_min", E.ExpectColumnValuesToBeBetween(column="feature_min", min_value=lo)),
            ("features_below_max", E.ExpectColumnValuesToBeBetween(column="feature_max", max_value=hi)),
        ]
    return {"table": table_checks, "columns": column_checks, "rows": row_checks}


class GxView:
    """One GX validation definition (a suite on a dataframe asset), built once and run per frame."""

    def __init__(self, context, key: str, checks: list, source: str = "pandas") -> None:
        import great_expectations as gx

        sources = context.data_sources
        if source == "pandas":
            datasource = sources.add_pandas(f"{key}_source")
        else:  # the caller's session and caching, not GX's own
            datasource = sources.add_spark(f"{key}_source", persist=False)
        asset = datasource.add_dataframe_asset(key)
        batch = asset.add_batch_definition_whole_dataframe(f"{key}_batch")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{key}_suite"))
        for _, expectation in checks:
            suite.add_expectation(expectation)
        self.checks = checks
        self.definition = context.validation_definitions.add(gx.ValidationDefinition(name=key, data=batch, suite=suite))

    def run(self, frame, result_format: Any = "COMPLETE") -> list[tuple[str, Any]]:
        if not self.checks:
            return []
        result = self.definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        # GX keeps the suite's order; pair results back with our names by expectation id.
        by_id = {r.expectation_config.id: r for r in result.results}
        return [(name, by_id[exp.id]) for name, exp in self.checks]


def silent_context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every pandas frame it validates (a hash of each row and the index, kept only
    # as a batch marker we never read) unless the frame holds over HASH_THRESHOLD bytes. clean's
    # whole-table checks validate frames as long as the table: that hash took ~40 bytes a row at
    # once, 270 MB of clean's peak at 7M rows, growing with the table. Off for every frame.
    pandas_execution_engine.HASH_THRESHOLD = 0

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


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
class _RowCheck:
    """A row-level check's results summed over the batches seen so far."""

    view: str
    name: str
    expectation: str = ""
    unexpected_count: int = 0
    examples: list[Any] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, result: CheckResult) -> None:
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


class StreamValidation:
    """The suite for one raw table, run on its schema first and then batch by batch."""

    def __init__(self, schema: pa.Schema, contract: DataParams, params: CleanParams, context=None) -> None:
        self.contract, self.params = contract, params
        self.columns = describe_columns(schema, contract)
        self.features = [c.name for c in self.columns if c.role == "feature"]
        self.contracts = [c.contract for c in self.columns if c.contract is not None]
        self._gaps_allowed = frozenset(c.name for c in self.contracts if c.missing != "quarantine")
        self._categorical = frozenset(c.name for c in self.contracts if c.kind == "categorical")
        self._categories = {c.name: list(c.categories) for c in self.contracts if c.categories is not None}
        suite = expectations(contract, params, self.features, self._categories)
        self._order = [(view, name) for view, checks in suite.items() for name, _ in checks]
        context = context or silent_context()

        def view(key: str, from_view: str, keep: Callable[[str], bool]) -> GxView:
            return GxView(context, key, [c for c in suite[from_view] if keep(c[0])])

        self._schema_view = view("schema", "table", lambda name: name not in WHOLE_TABLE_CHECKS)
        self._count_view = view("row_count", "table", lambda name: name in WHOLE_TABLE_CHECKS)
        self._columns_view = view("columns", "columns", lambda name: True)
        self._rows_view = view("rows", "rows", is_row_check)
        self._share_view = view("duplicates", "rows", lambda name: name in WHOLE_TABLE_CHECKS)
        self._schema = schema
        self._results: dict[tuple[str, str], CheckResult] = {}
        self._rows = {name: _RowCheck("rows", name) for name, _ in self._rows_view.checks}
        self._duplicate_rows: list[np.ndarray] = []
        self.rows_in = 0
        self.quarantined = 0
        self.reasons: Counter = Counter()
        self.first_failures: dict[str, tuple[int, str]] = {}

    def check_schema(self) -> list[CheckResult]:
        """The column checks, on the schema alone; returns the failures (nothing is read yet)."""
        empty = pd.DataFrame(columns=self._schema.names)
        for name, res in self._schema_view.run(empty):
            self._results["table", name] = check_result("table", name, res)
        kinds = pd.DataFrame(
            {"column": self.features, "numeric": [c.kind != "other" for c in self.columns if c.role == "feature"]}
        )
        for name, res in self._columns_view.run(kinds):
            unexpected = (res.result or {}).get("unexpected_index_list") or []
            examples = [kinds["column"].iloc[i] for i in unexpected[:5]]
            self._results["columns", name] = check_result("columns", name, res, examples)
        failures = [r for r in self._results.values() if not r.success]
        strays = unknown_columns(self._schema, self.contract)
        if strays:
            failures.append(CheckResult("table", "data.columns names feature columns", "", False, strays))
        return failures

    def validate_batch(self, batch: pa.RecordBatch, duplicate: np.ndarray) -> dict[int, list[str]]:
        """Row-level checks on one batch (its rows numbered from `rows_in`); returns the batch's bad
        rows as {row number in the table: names of the checks it failed}."""
        offset = self.rows_in
        profile = profile_batch(batch, self.contract.label, self.features, self._gaps_allowed, self._categorical)
        for name in self._categories:
            profile[CATEGORY_CHECK + name] = category_values(batch.column(name))
        profile["duplicate"] = duplicate
        profile.index = pd.RangeIndex(offset, offset + batch.num_rows)
        bad: dict[int, list[str]] = {}
        for name, res in self._rows_view.run(profile):
            self._rows[name].add(check_result("rows", name, res))
            for row in (res.result or {}).get("unexpected_index_list") or []:
                bad.setdefault(int(row), []).append(name)
        self._duplicate_rows.append(np.flatnonzero(duplicate) + offset)
        self.rows_in += batch.num_rows
        return bad

    def count_quarantined(self, bad: dict[int, list[str]], reason: Callable[[int, list[str]], str]) -> None:
        """Tally a batch's bad rows; `reason(row, names)` words one (called for first examples only)."""
        self.quarantined += len(bad)
        self.reasons.update(reason_text(name) for names in bad.values() for name in names)
        for row in sorted(bad):
            for name in bad[row]:
                if name not in self.first_failures:
                    self.first_failures[name] = (row, reason(row, [name]))

    def finish(self) -> Tally:
        """The whole-table checks on what the batches accumulated; every check's result."""
        counted = pd.DataFrame(index=pd.RangeIndex(self.rows_in))
        for name, res in self._count_view.run(counted):
            self._results["table", name] = check_result("table", name, res)
        if self._share_view.checks:
            flags = np.zeros(self.rows_in, bool)
            flags[np.concatenate([np.empty(0, np.int64), *self._duplicate_rows])] = True
            for name, res in self._share_view.run(pd.DataFrame({"duplicate": flags})):
                self._results["rows", name] = check_result("rows", name, res)
        for name, check in self._rows.items():
            self._results["rows", name] = check.result()
        return self.tally()

    def record(self, view: str, name: str, result: CheckResult) -> None:
        """A result found elsewhere (another engine's run of the same check)."""
        self._results[view, name] = result

    def tally(self) -> Tally:
        """Every check's result so far, in the suite's order, with the row counts."""
        checks = [self._results[key] for key in self._order if key in self._results]
        return Tally(
            checks,
            self.rows_in,
            self.quarantined,
            self.reasons,
            self.first_failures,
            self._schema.names,
            len(self.features),
            self.contracts,
        )


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


def row_reason(table: pd.DataFrame, row: int, failed: list[str], contract: DataParams) -> str:
    """A readable reason for one quarantined row, naming a column and its value."""
    features = feature_columns(list(table.columns), contract)
    text_columns = {c for c in features if _is_categorical(table, c, contract)}
    gaps_allowed = {c for c in features if _policy(c, contract) != "quarantine"}
    values = table.iloc[row]
    parts = []
    for name in failed:
        text = reason_text(name)
        if name.startswith(CATEGORY_CHECK):
            column = name[len(CATEGORY_CHECK) :]
            text += f": {column}={values[column]!r} (not in data.columns.{column}.categories)"
        elif name == "no_null_features" and text_columns:
            gaps = [c for c in features if c not in gaps_allowed and (pd.isna(values[c]) or values[c] == "")]
            if gaps:
                text += f": {gaps[0]} is empty" if gaps[0] in text_columns else f": {gaps[0]}=nan"
        elif name == "label_in_set":
            label = table[contract.label].iloc[row]  # from its column: a row of mixed types would widen it
            text += f" {label.item() if isinstance(label, np.generic) else label!r}"
        elif name in ("no_null_features", "finite_features", "features_above_min", "features_below_max"):
            numeric = [
                c for c in features if c not in text_columns and (name != "no_null_features" or c not in gaps_allowed)
            ]
            feats = pd.to_numeric(values[numeric], errors="coerce").astype(float)  # nulls become NaN
            if name == "no_null_features":
                bad = feats[feats.isna()]
            elif name == "finite_features":
                bad = feats[np.isinf(feats)]
            elif contract.value_range is None:  # the range checks exist only with a range
                bad = feats.iloc[:0]
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


def _policy(column: str, contract: DataParams) -> str:
    spec = contract.columns.get(column)
    return spec.missing if spec is not None and spec.missing is not None else contract.missing


def _is_categorical(table: pd.DataFrame, column: str, contract: DataParams) -> bool:
    spec = contract.columns.get(column)
    if spec is not None and spec.type is not None:
        return spec.type == "categorical"
    return contract.image_shape is None and not pd.api.types.is_numeric_dtype(table[column])


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


def render_report(
    checks: list[CheckResult], summary: dict[str, Any], reasons: dict[str, int], columns: list[dict] | None = None
) -> str:
    """A self-contained HTML page: summary, the feature columns' contract (when any is categorical
    or has a missing-value policy), every expectation with its outcome, quarantine reasons."""
    esc = html.escape
    contract = ""
    if columns and any(c["type"] == "categorical" or c["missing"] != "quarantine" for c in columns):
        head = "".join(f"<th>{esc(k)}</th>" for k in columns[0])
        body = "".join(
            "<tr>"
            + "".join(f"<td>{esc(', '.join(v) if isinstance(v, list) else str(v))}</td>" for v in c.values())
            + "</tr>"
            for c in columns
        )
        contract = f"<h2>Columns (data contract)</h2><table><tr>{head}</tr>{body}</table>"

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
{contract}<h2>Expectations (Great Expectations)</h2>
<table><tr><th>view</th><th>check</th><th>expectation</th><th>result</th><th>observed</th>
<th>unexpected</th><th>examples</th></tr>{"".join(row(c) for c in checks)}</table>
<h2>Quarantine reasons</h2><table><tr><th>reason</th><th>rows</th></tr>{reason_rows}</table>
</body></html>
"""

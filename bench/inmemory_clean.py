"""The clean stage as it was before it streamed: the whole table in memory at once.

Kept only as the baseline that `bench/data_stages.py` measures the streamed stage against, and
that the equivalence tests compare it with (same rows, same quarantine, same reasons). It shares
the suite, the reasons and the report with the stage; what differs is how the rows are held:
the whole raw table as one pandas frame, its row profile and `DataFrame.duplicated` over all of
it. Delete it once no comparison needs it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from pipeline.params import CleanParams, DataParams
from pipeline.sources import read_source
from pipeline.tables import compact, feature_columns
from pipeline.validation import (
    ROW_REASONS,
    CheckResult,
    GxView,
    describe_failure,
    duplicate_result,
    expectations,
    render_report,
    row_reason,
    silent_context,
)


def row_profile(table: pd.DataFrame, features: list[str], label: str, chunk: int = 8_192) -> pd.DataFrame:
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
        if part.dtype.kind in "iu":
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
            "unparsed": np.full(n, None, object),  # this path reads numeric columns only
            "null_features": nulls,
            "nonfinite_features": nonfinite,
            "feature_min": lo,
            "feature_max": hi,
        }
    )


def validate(table: pd.DataFrame, contract: DataParams, clean: CleanParams):
    features = feature_columns(list(table.columns), contract)
    checks = expectations(contract, clean, features)
    columns = pd.DataFrame({"column": features, "numeric": [pd.api.types.is_numeric_dtype(table[c]) for c in features]})
    duplicated = table.duplicated(keep="first").to_numpy()
    views = {"table": table, "columns": columns}
    if columns["numeric"].all() and contract.label in table:
        views["rows"] = row_profile(table, features, contract.label)
    views["totals"] = pd.DataFrame({"rows": [len(table)], "duplicate_share": [duplicated.mean()]})
    context = silent_context()
    outcome: list[CheckResult] = []
    bad_rows: dict[int, list[str]] = {}
    for view, frame in views.items():
        for name, res in GxView(context, view, checks[view]).run(frame):
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
        if view == "rows":  # the duplicates: pandas' duplicated() over the whole table
            outcome.append(duplicate_result(int(duplicated.sum())))
            for index in np.flatnonzero(duplicated):
                bad_rows.setdefault(int(index), []).append("not_duplicate")
    return outcome, bad_rows


def run(raw: pd.DataFrame, contract: DataParams, params: CleanParams) -> dict:
    """Validate `raw` whole; returns clean and quarantine frames, metrics and the report (or raises
    ValueError listing the problems, where the stage raises its ValidationFailed)."""
    checks, bad_rows = validate(raw, contract, params)
    counted = Counter(ROW_REASONS[name] for failed in bad_rows.values() for name in failed)
    reasons = {ROW_REASONS[c.name]: counted[ROW_REASONS[c.name]] for c in checks if c.row_level and c.unexpected_count}
    share = len(bad_rows) / max(len(raw), 1)
    summary = {
        "rows_in": len(raw),
        "rows_kept": len(raw) - len(bad_rows),
        "rows_quarantined": len(bad_rows),
        "quarantined_share": round(share, 6),
    }
    report = render_report(checks, summary, reasons)
    problems = [describe_failure(c, contract, list(raw.columns)) for c in checks if not c.success and not c.row_level]
    if share > params.max_quarantine_share:
        problems.append(f"{share:.1%} of rows would be quarantined")
    if problems:
        raise ValueError("; ".join(problems))
    bad = sorted(bad_rows)
    quarantine = raw.iloc[bad].copy()
    quarantine.insert(0, "row", bad)
    quarantine["reason"] = [row_reason(raw, row, bad_rows[row], contract) for row in bad]
    for column in quarantine.columns:
        if quarantine[column].dtype == object and column != "reason":
            quarantine[column] = quarantine[column].astype(str)
    features = feature_columns(list(raw.columns), contract)
    kept = raw.drop(index=raw.index[bad])[[contract.label, *features]].reset_index(drop=True)
    kept = pd.DataFrame({column: compact(kept[column]) for column in kept.columns})
    metrics = {**summary, "reasons": reasons, "features": len(features)}
    return {"clean": kept, "quarantine": quarantine, "metrics": metrics, "report_html": report, "checks": checks}


def run_file(raw_path, contract: DataParams, params: CleanParams) -> dict:
    return run(read_source(raw_path), contract, params)

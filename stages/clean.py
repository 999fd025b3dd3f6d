"""clean: validate the raw table against the data contract and quarantine bad rows.

Table-level failures (unreadable or empty file, missing or unexpected column, wrong type, too few
rows, too many duplicates) and a quarantined share above `clean.max_quarantine_share` stop the
stage with a message naming the check, the column and an example value. Nothing is written then,
so the outputs of the last good run stay as they were.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline import atomic
from pipeline.params import CleanParams, DataParams
from pipeline.tables import TableError, compact, feature_columns, read_source, write_parquet
from pipeline.validation import ROW_REASONS, describe_failure, render_report, row_reason, validate
from stages import _cli

log = logging.getLogger(__name__)


class ValidationFailed(_cli.StageError):
    """The raw table failed validation; nothing was written."""


@dataclass(frozen=True)
class CleanResult:
    clean: pd.DataFrame
    quarantine: pd.DataFrame
    metrics: dict[str, Any]
    report_html: str


def _what_happened_to_outputs() -> str:
    """Nothing is written on failure, but under `dvc repro` (which sets DVC_STAGE for the command)
    DVC has already removed the stage's outputs before it started; its cache still holds them."""
    stage = os.environ.get("DVC_STAGE")
    if stage:
        return (
            "This run wrote nothing, but DVC removed the previous outputs before the stage started; "
            f"`dvc checkout {stage}` restores those of the last good run (recorded in dvc.lock)."
        )
    return "This run wrote nothing: the previous outputs are untouched."


def run(raw: pd.DataFrame, contract: DataParams, params: CleanParams) -> CleanResult:
    """Validate `raw`; split it into kept rows and quarantined rows (with a reason each)."""
    outcome = validate(raw, contract, params)
    reasons = Counter(ROW_REASONS[name] for failed in outcome.bad_rows.values() for name in failed)
    share = len(outcome.bad_rows) / max(len(raw), 1)
    summary = {
        "rows_in": len(raw),
        "rows_kept": len(raw) - len(outcome.bad_rows),
        "rows_quarantined": len(outcome.bad_rows),
        "quarantined_share": round(share, 6),
    }
    report = render_report(outcome.checks, summary, dict(reasons))

    problems = [describe_failure(check, contract, list(raw.columns)) for check in outcome.table_failures]
    if share > params.max_quarantine_share:
        examples = []
        for name in ROW_REASONS:
            rows = [row for row, failed in outcome.bad_rows.items() if name in failed]
            if rows:
                examples.append(
                    f"{len(rows)} x {ROW_REASONS[name]} (e.g. row {rows[0]}: "
                    f"{row_reason(raw, rows[0], [name], contract)})"
                )
        problems.append(
            f"{share:.1%} of rows would be quarantined, above clean.max_quarantine_share="
            f"{params.max_quarantine_share:.1%}: " + "; ".join(examples)
        )
    if problems:
        raise ValidationFailed(
            "raw table failed validation:\n  - " + "\n  - ".join(problems) + "\nFix the data (or the contract in "
            f"params.yaml `data`/`clean`) and rerun. {_what_happened_to_outputs()}"
        )

    bad = sorted(outcome.bad_rows)
    quarantine = raw.iloc[bad].copy()
    quarantine.insert(0, "row", bad)
    quarantine["reason"] = [row_reason(raw, row, outcome.bad_rows[row], contract) for row in bad]
    for column in quarantine.columns:
        if quarantine[column].dtype == object and column != "reason":
            quarantine[column] = quarantine[column].astype(str)

    features = feature_columns(list(raw.columns), contract)
    kept = raw.drop(index=raw.index[bad])[[contract.label, *features]].reset_index(drop=True)
    kept = pd.DataFrame({column: compact(kept[column]) for column in kept.columns})
    metrics = {**summary, "reasons": dict(reasons), "features": len(features)}
    log.info("kept %d rows, quarantined %d (%.2f%%)", summary["rows_kept"], len(bad), 100 * share)
    return CleanResult(kept, quarantine, metrics, report)


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--raw", help="raw table (default: data.source in params)")
    p.add_argument("--out", required=True, help="Parquet file of the rows that passed")
    p.add_argument("--quarantine", required=True, help="Parquet file of rejected rows with a reason each")
    p.add_argument("--metrics", required=True, help="JSON metrics file")
    p.add_argument("--report", required=True, help="HTML validation report")

    def body(args, params):
        try:
            raw = read_source(args.raw or params.data.source)
        except TableError as error:
            raise ValidationFailed(f"raw table failed validation: {error}") from None
        result = run(raw, params.data, params.clean)
        # Written only after every check passed; each write is atomic.
        write_parquet(result.quarantine, args.quarantine)
        atomic.write_text(args.report, result.report_html)
        atomic.write_json(args.metrics, result.metrics)
        write_parquet(result.clean, args.out)

    _cli.main("clean", body, p.parse_args())


if __name__ == "__main__":
    main()

"""Great Expectations suites built from the data contract in params.yaml, run batch by batch.

GX checks small views of the raw table rather than every cell one expectation at a time, so an
MNIST-sized table (785 columns) validates at the speed the rows can be read:

- `table`:   table-level expectations on the columns, checked on the schema before any row is read;
- `columns`: one row per feature column with its kind (a wrong type fails the table);
- `rows`:    one row per raw row with its label and a profile of its features (nulls, min, max,
             non-finite count, the first value that is not a number), built and validated one
             batch at a time with the same suite. Failures here are row-level: GX's unexpected
             index list says which rows go to quarantine;
- `totals`:  the row count and the share of exact duplicates, on a one-row frame of the totals
             once every batch has been read (duplicates are found by sorting row hashes across
             batches, `pipeline.engines`).

`RowChecks` (checks.py) holds the GX context and its views; the column descriptions
(`ColumnSpec`: role, kind and the column's contract, `pipeline.contract`) decide what the profile
counts: a gap in a column whose missing-value policy fills it is not one; a categorical column
counts only its gaps, and one with declared categories adds its values to the profile under
`categories:<column>`, checked by GX against the set (an undeclared value quarantines the row).
The modules: reasons (what a quarantined row's reason says), profile (the row profile), suite
(the expectations), results (check results and their sums), checks, verdict (metrics or the
failure message), report (the HTML page).
"""

from pipeline.validation.checks import RowChecks, duplicate_result
from pipeline.validation.profile import ColumnSpec, describe_columns, expected_features, profile_batch
from pipeline.validation.reasons import (
    CATEGORY_CHECK,
    CATEGORY_REASON,
    ROW_REASONS,
    is_row_check,
    reason_text,
    row_reason,
)
from pipeline.validation.report import render_report
from pipeline.validation.results import CheckResult, RowCheck, Tally, check_result
from pipeline.validation.suite import WHOLE_TABLE_CHECKS, GxView, expectations, silent_context
from pipeline.validation.verdict import ValidationFailed, describe_failure, judge, validation_failed

__all__ = [
    "CATEGORY_CHECK",
    "CATEGORY_REASON",
    "ROW_REASONS",
    "WHOLE_TABLE_CHECKS",
    "CheckResult",
    "ColumnSpec",
    "GxView",
    "RowCheck",
    "RowChecks",
    "Tally",
    "ValidationFailed",
    "check_result",
    "describe_columns",
    "describe_failure",
    "duplicate_result",
    "expectations",
    "expected_features",
    "is_row_check",
    "judge",
    "profile_batch",
    "reason_text",
    "render_report",
    "row_reason",
    "silent_context",
    "validation_failed",
]

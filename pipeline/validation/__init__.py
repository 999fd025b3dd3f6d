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
from pipeline.validation.stream import StreamValidation
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
    "StreamValidation",
    "Tally",
    "ValidationFailed",
    "check_result",
    "describe_columns",
    "describe_failure",
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

"""Between the passes: the units' reports and the duplicates summed into one verdict on the table.

This is all a Spark driver computes itself: it reads one small report per unit and the duplicates'
totals, never a row. The result reads as if one process had validated the whole table: each row
check's count and first examples in source order, the first failing row of each check with its
reason, the whole-table checks on the totals; then `pipeline.validation.judge` gives the metrics
and the report, or raises ValidationFailed naming every problem. It also fixes what the second pass
needs: where each unit's rows start in the source, and the clean table's column types.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.batches import RawStream
from pipeline.engines.duplicates import Duplicates
from pipeline.engines.inspect import UnitReport, kept_schema
from pipeline.engines.write import DUPLICATE_REASON
from pipeline.params import CleanParams, DataParams
from pipeline.sinks import CompactTypes
from pipeline.tables import TableError
from pipeline.validation import (
    CheckResult,
    RowCheck,
    RowChecks,
    Tally,
    describe_failure,
    duplicate_result,
    judge,
    validation_failed,
)
from pipeline.validation.suite import DUPLICATE_CHECK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    metrics: dict[str, Any]
    report: str
    offsets: list[int]  # unit i's first row is row offsets[i] of the source
    kept: pa.Schema  # the clean table's columns in their smallest exact types


def check_schema(checks: RowChecks, stream: RawStream, contract: DataParams) -> list[CheckResult]:
    """The column checks, before any row is read; a failure stops here."""
    results = checks.check_schema()
    failures = [r for r in results if not r.success]
    if failures:
        raise validation_failed([describe_failure(c, contract, stream.schema.names) for c in failures])
    for path, rows in stream.large_row_groups():
        log.warning(
            "%s: row groups of %d rows; reading one takes memory for all of it whatever clean.batch_mb says "
            "(rewrite the file with smaller row groups to use less)",
            path,
            rows,
        )
    return results


def judge_units(
    stream: RawStream,
    checks: RowChecks,
    schema_results: list[CheckResult],
    reports: list[UnitReport],
    duplicates: Duplicates,
    params: CleanParams,
) -> Verdict:
    reports = sorted(reports, key=lambda r: r.index)
    offsets = [0]
    for r in reports:
        offsets.append(offsets[-1] + r.rows)
    rows_in = offsets.pop()
    if rows_in == 0:
        raise TableError("the table is empty (no rows)")
    results = {(r.view, r.name): r for r in schema_results}
    for name in checks.row_checks:
        total = RowCheck("rows", name)
        for r in reports:
            total.add(r.checks[name])
        results["rows", name] = total.result()
    results["rows", DUPLICATE_CHECK] = duplicate_result(duplicates.count)
    numbers: Counter[str] = Counter()
    not_numbers: Counter[str] = Counter()
    for r in reports:
        numbers.update(r.numbers)
        not_numbers.update(r.not_numbers)
    never = [name for name in checks.features if not_numbers[name] and not numbers[name]]
    if never:
        results["columns", "features are numeric"] = checks.check_columns(never)
    for result in checks.check_totals(rows_in, duplicates.count):
        results[result.view, result.name] = result
    tally = Tally(
        [results[key] for key in checks.order if key in results],
        rows_in,
        sum(r.quarantined for r in reports) + duplicates.only_duplicate,
        _reasons(reports, duplicates),
        _first_failures(reports, offsets, duplicates),
        stream.schema.names,
        len(checks.features),
        checks.contracts,
    )
    metrics, report = judge(tally, checks.contract, params)
    types = CompactTypes(kept_schema(stream, checks))
    for r in reports:
        if r.types is not None:
            types.merge(r.types)
    return Verdict(metrics, report, offsets, types.types())


def _reasons(reports: list[UnitReport], duplicates: Duplicates) -> Counter:
    reasons: Counter = Counter()
    for r in reports:
        reasons.update(r.reasons)
    if duplicates.count:
        reasons[DUPLICATE_REASON] += duplicates.count
    return reasons


def _first_failures(
    reports: list[UnitReport], offsets: list[int], duplicates: Duplicates
) -> dict[str, tuple[int, str]]:
    first: dict[str, tuple[int, str]] = {}
    for r in reports:  # in source order: the first unit to fail a check has its first row
        for name, (row, reason) in r.first_failures.items():
            first.setdefault(name, (offsets[r.index] + row, reason))
    if duplicates.first is not None:
        unit, row = duplicates.first
        first[DUPLICATE_CHECK] = (offsets[unit] + row, DUPLICATE_REASON)
    return first

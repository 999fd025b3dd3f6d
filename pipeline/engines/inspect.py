"""The first pass over a unit of work: check its rows, hash them, and say what it found.

For each batch of the unit (`pipeline.units`), the row checks (`pipeline.validation.RowChecks`)
give the rows that fail and why; every row's 64-bit hash (`pipeline.rowhash`) goes to a hash sink,
for the duplicates to be found across the whole table afterwards; the failing rows' reasons go to
a small Parquet file of the unit's own, for the second pass. What comes back is a `UnitReport`:
counts, the first examples of each check, the first failing row of each, and the value ranges of
the rows that pass (the clean table's types). Its size depends on the columns, not the rows.

The same function runs in the local engine's process and, for Spark, on the executors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import units
from pipeline.batches import RawStream
from pipeline.rowhash import RowHasher
from pipeline.sinks import CompactTypes
from pipeline.units import Unit
from pipeline.validation import RowCheck, RowChecks, reason_text, row_reason

BAD_ROWS = pa.schema([pa.field("row", pa.int64()), pa.field("reason", pa.string())])


class HashSink(Protocol):
    def write(self, unit: int, start: int, hashes: np.ndarray, bad: np.ndarray) -> None:
        """Rows start.. of `unit`: their hashes (uint64) and whether a row check failed them."""


@dataclass
class UnitReport:
    index: int
    rows: int = 0
    checks: dict[str, RowCheck] = field(default_factory=dict)
    first_failures: dict[str, tuple[int, str]] = field(default_factory=dict)  # check -> (row in the unit, reason)
    reasons: Counter = field(default_factory=Counter)
    quarantined: int = 0  # rows a row check failed (the duplicates are counted later)
    types: CompactTypes | None = None  # value ranges of the other rows' kept columns
    numbers: Counter = field(default_factory=Counter)  # numeric column -> values that were numbers
    not_numbers: Counter = field(default_factory=Counter)  # ... and values that were not


def kept_schema(stream: RawStream, checks: RowChecks) -> pa.Schema:
    """The clean table's columns (label, then features) in the source's types."""
    return pa.schema([stream.schema.field(name) for name in (checks.contract.label, *checks.features)])


def bad_rows_path(work: str | Path, unit: int) -> Path:
    return Path(work) / "bad" / f"unit-{unit:06d}.parquet"


def inspect_unit(stream: RawStream, unit: Unit, checks: RowChecks, hashes: HashSink, work: str | Path) -> UnitReport:
    report = UnitReport(unit.index, checks={name: RowCheck("rows", name) for name in checks.row_checks})
    kept = kept_schema(stream, checks)
    report.types = CompactTypes(kept)
    hasher = RowHasher(stream.schema)
    bad_at: list[np.ndarray] = []
    bad_reasons: list[str] = []
    start = 0
    for raw in units.read(stream, unit):
        batch, n = raw.rows, raw.rows.num_rows
        bad, results = checks.check_batch(raw)
        for name, result in results.items():
            report.checks[name].add(result)
        flags = np.zeros(n, bool)
        if bad:
            rows = np.array(sorted(bad), np.int64)
            flags[rows] = True
            reasons = _reasons(batch, raw.unparsed, rows, bad, checks)
            bad_at.append(rows + start)
            bad_reasons.extend(reasons)
            report.quarantined += len(rows)
            for row, reason in zip(rows, reasons, strict=True):
                report.reasons.update(reason_text(name) for name in bad[row])
                for name in bad[row]:
                    if name not in report.first_failures:
                        single = (
                            reason
                            if len(bad[row]) == 1
                            else _reasons(batch, raw.unparsed, [row], {row: [name]}, checks)[0]
                        )
                        report.first_failures[name] = (start + int(row), single)
        hashes.write(unit.index, start, hasher.hash(batch), flags)
        report.types.update(batch.filter(pa.array(~flags)).select(kept.names) if bad else batch.select(kept.names))
        for name in checks.features:
            column = batch.column(name)
            report.numbers[name] += len(column) - column.null_count
        for name, found in raw.unparsed.items():
            report.not_numbers[name] += len(found.rows)
        start += n
        pa.default_memory_pool().release_unused()  # see pipeline/engines/write.py
    report.rows = start
    report.numbers = Counter({name: count for name, count in report.numbers.items() if name in report.not_numbers})
    if bad_at:
        path = bad_rows_path(work, unit.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table([pa.array(np.concatenate(bad_at)), pa.array(bad_reasons, pa.string())], schema=BAD_ROWS)
        pq.write_table(table, path)
    return report


def _reasons(batch: pa.RecordBatch, unparsed, rows, bad: dict[int, list[str]], checks: RowChecks) -> list[str]:
    """The reason of each of `rows` (positions in the batch), from its values and failed checks."""
    frame = batch.take(pa.array(np.asarray(rows, np.int64))).to_pandas()
    words: dict[int, dict[str, str]] = {int(row): {} for row in rows}
    for name, found in unparsed.items():
        for row, text in zip(found.rows.tolist(), found.texts, strict=True):
            if row in words:
                words[row][name] = text
    return [row_reason(frame, i, bad[row], checks.contract, words[int(row)]) for i, row in enumerate(rows)]


def read_bad_rows(work: str | Path, unit: int) -> tuple[np.ndarray, list[str]]:
    """The rows of `unit` a row check failed (positions in the unit, ascending) and their reasons."""
    path = bad_rows_path(work, unit)
    if not path.exists():
        return np.empty(0, np.int64), []
    table = pq.read_table(path)
    return table.column("row").to_numpy(), table.column("reason").to_pylist()

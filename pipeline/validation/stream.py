"""The suite for one raw table, run on its schema first and then batch by batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.contract import category_values, unknown_columns
from pipeline.params import CleanParams, DataParams
from pipeline.validation.profile import describe_columns, profile_batch
from pipeline.validation.reasons import CATEGORY_CHECK, is_row_check, reason_text
from pipeline.validation.results import CheckResult, RowCheck, Tally, check_result
from pipeline.validation.suite import WHOLE_TABLE_CHECKS, GxView, expectations, silent_context


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
        self._rows = {name: RowCheck("rows", name) for name, _ in self._rows_view.checks}
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

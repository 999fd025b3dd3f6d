"""The suite for one raw table: the checks on its schema, on each batch of rows, on the totals.

`RowChecks` holds the GX context and its views and nothing about the rows: one instance checks
any number of batches, in any order, in any process (each Spark executor builds its own from the
same schema and contract), and what it returns for a batch depends on that batch alone. Summing
the batches' results is the engines' job (`pipeline.engines.inspect`).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from pipeline.batches import RawBatch
from pipeline.contract import category_values, unknown_columns
from pipeline.params import CleanParams, DataParams
from pipeline.validation.profile import describe_columns, profile_batch
from pipeline.validation.reasons import CATEGORY_CHECK
from pipeline.validation.results import CheckResult, check_result
from pipeline.validation.suite import DUPLICATE_CHECK, DUPLICATE_EXPECTATION, GxView, expectations, silent_context


class RowChecks:
    def __init__(self, schema: pa.Schema, contract: DataParams, params: CleanParams, context=None) -> None:
        self.schema, self.contract, self.params = schema, contract, params
        self.columns = describe_columns(schema, contract)
        self.features = [c.name for c in self.columns if c.role == "feature"]
        self.contracts = [c.contract for c in self.columns if c.contract is not None]
        self._gaps_allowed = frozenset(c.name for c in self.contracts if c.missing != "quarantine")
        self._categorical = frozenset(c.name for c in self.contracts if c.kind == "categorical")
        self._categories = {c.name: list(c.categories) for c in self.contracts if c.categories is not None}
        suite = expectations(contract, params, self.features, self._categories)
        context = context or silent_context()
        self._views = {view: GxView(context, view, checks) for view, checks in suite.items()}
        self.row_checks = [name for name, _ in suite["rows"]]
        # Every check in the report's order: the duplicates after the GX row checks.
        self.order = [(view, name) for view, checks in suite.items() for name, _ in checks]
        self.order.insert(self.order.index(("rows", self.row_checks[-1])) + 1, ("rows", DUPLICATE_CHECK))

    def check_schema(self) -> list[CheckResult]:
        """The table and column checks, on the schema alone (nothing is read yet)."""
        empty = pd.DataFrame(columns=self.schema.names)
        results = [check_result("table", name, res) for name, res in self._views["table"].run(empty)]
        results.append(self.check_columns())
        strays = unknown_columns(self.schema, self.contract)
        if strays:
            results.append(CheckResult("table", "data.columns names feature columns", "", False, strays))
        return results

    def check_columns(self, never_numbers: list[str] | None = None) -> CheckResult:
        """Every feature column has a type the contract takes; `never_numbers`: numeric columns
        that held text in which no value was a number (a wrong type, not a few bad values)."""
        wrong = set(never_numbers or ())
        kinds = pd.DataFrame(
            {
                "column": self.features,
                "numeric": [c.kind != "other" and c.name not in wrong for c in self.columns if c.role == "feature"],
            }
        )
        ((name, res),) = self._views["columns"].run(kinds)
        unexpected = (res.result or {}).get("unexpected_index_list") or []
        return check_result("columns", name, res, [kinds["column"].iloc[i] for i in unexpected[:5]])

    def check_batch(self, batch: RawBatch) -> tuple[dict[int, list[str]], dict[str, CheckResult]]:
        """The row checks on one batch: its bad rows {position in the batch: names of the checks
        it failed, in the suite's order} and each check's result on the batch."""
        profile = profile_batch(
            batch.rows, self.contract.label, self.features, self._gaps_allowed, self._categorical, batch.unparsed
        )
        for name in self._categories:
            profile[CATEGORY_CHECK + name] = category_values(batch.rows.column(name))
        bad: dict[int, list[str]] = {}
        results = {}
        for name, res in self._views["rows"].run(profile):
            results[name] = check_result("rows", name, res)
            for row in (res.result or {}).get("unexpected_index_list") or []:
                bad.setdefault(int(row), []).append(name)
        return bad, results

    def check_totals(self, rows: int, duplicates: int) -> list[CheckResult]:
        """The whole-table checks, on the totals of every batch."""
        totals = pd.DataFrame({"rows": [rows], "duplicate_share": [duplicates / max(rows, 1)]})
        return [check_result("totals", name, res) for name, res in self._views["totals"].run(totals)]


def duplicate_result(count: int) -> CheckResult:
    """The duplicates, as the report lists a row check (examples: the flag of the first five)."""
    return CheckResult(
        "rows", DUPLICATE_CHECK, DUPLICATE_EXPECTATION, count == 0, None, count, [True] * min(count, 5), True
    )

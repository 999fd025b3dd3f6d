"""The Great Expectations suite built from the data contract, and running it on small frames."""

from __future__ import annotations

from typing import Any

from pipeline.params import CleanParams, DataParams
from pipeline.validation.profile import expected_features
from pipeline.validation.reasons import CATEGORY_CHECK

# The whole-table checks: judged once every row has been read, on a one-row frame of the totals
# (`rows`, `duplicate_share`), so what they hold does not grow with the table.
WHOLE_TABLE_CHECKS = ("enough rows", "duplicate share within limit")
# Exact duplicates are found by sorting the rows' hashes across every batch (`pipeline.engines`),
# not by GX on one batch; the report lists them as this row check.
DUPLICATE_CHECK = "not_duplicate"
DUPLICATE_EXPECTATION = "no exact duplicate (64-bit row hashes, sorted)"


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
        ("values_are_numbers", E.ExpectColumnValuesToBeNull(column="unparsed")),
        ("no_null_features", E.ExpectColumnValuesToBeBetween(column="null_features", max_value=0)),
        ("finite_features", E.ExpectColumnValuesToBeBetween(column="nonfinite_features", max_value=0)),
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
    totals = [
        ("enough rows", E.ExpectColumnMinToBeBetween(column="rows", min_value=clean.min_rows)),
        (
            "duplicate share within limit",
            E.ExpectColumnMaxToBeBetween(column="duplicate_share", max_value=clean.max_duplicate_share),
        ),
    ]
    return {"table": table_checks, "columns": column_checks, "rows": row_checks, "totals": totals}


class GxView:
    """One GX validation definition (a suite on a dataframe asset), built once and run per frame."""

    def __init__(self, context, key: str, checks: list) -> None:
        import great_expectations as gx

        asset = context.data_sources.add_pandas(f"{key}_source").add_dataframe_asset(key)
        batch = asset.add_batch_definition_whole_dataframe(f"{key}_batch")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{key}_suite"))
        for _, expectation in checks:
            suite.add_expectation(expectation)
        self.checks = checks
        self.definition = context.validation_definitions.add(gx.ValidationDefinition(name=key, data=batch, suite=suite))
        self._stored = context.validation_results_store.store_backend

    def run(self, frame, result_format: Any = "COMPLETE") -> list[tuple[str, Any]]:
        if not self.checks:
            return []
        result = self.definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        self._forget()
        # GX keeps the suite's order; pair results back with our names by expectation id.
        by_id = {r.expectation_config.id: r for r in result.results}
        return [(name, by_id[exp.id]) for name, exp in self.checks]

    def _forget(self) -> None:
        """Drop the copy of the results GX keeps in the context's store (as JSON, with the bad
        rows' index lists): one per batch run, kept for the whole process otherwise, which made
        clean's memory grow with the table (about 6 KB a batch, more for batches with bad rows)."""
        for key in self._stored.list_keys():
            if key != self._stored.STORE_BACKEND_ID_KEY:
                self._stored.remove_key(key)


def silent_context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every pandas frame it validates (a hash of each row and the index, kept only
    # as a batch marker we never read) unless the frame holds over HASH_THRESHOLD bytes: about 40
    # bytes a row at once, and time, for nothing we use. Off for every frame.
    pandas_execution_engine.HASH_THRESHOLD = 0

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context

"""Dirty tables: a value that is not a number in a numeric column, and int64 values above 2**53.

A stray word quarantines its row (its reason names the column and the value) on CSV, Parquet and
in-memory tables alike; the table fails only past clean.max_quarantine_share. An int64 feature of
any size is hashed, range-checked and kept exactly, and reaches the model as float32."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_image_table
from mixed_data import data_section, mixed_table

from pipeline.params import CleanParams, DataParams, EngineParams, SplitParams
from pipeline.rows import SplitTable
from stages import clean, split

LENIENT = CleanParams(min_rows=10, max_quarantine_share=0.2, max_duplicate_share=0.2)
OOPS = [3, 50, 90, 120, 150]


def _write(table: pd.DataFrame, form: str, folder) -> str:
    path = folder / f"raw.{form}"
    if form == "csv":
        table.to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path)
    return str(path)


def _clean(source: str, data: DataParams, folder):
    out, quarantine = folder / "clean.parquet", folder / "quarantine.parquet"
    metrics, _ = clean.run_source(source, data, LENIENT, EngineParams(), str(out), str(quarantine))
    return pd.read_parquet(out), pd.read_parquet(quarantine), metrics


@pytest.mark.parametrize("form", ["csv", "parquet", "memory"])
def test_a_word_in_a_numeric_column_quarantines_its_row_naming_column_and_value(form, params, tmp_path):
    table = tiny_image_table().astype({"px_5": str})
    table.loc[OOPS, "px_5"] = "oops"
    if form == "memory":
        result = clean.run(table, params.data, LENIENT)
        kept, quarantine, metrics = result.clean, result.quarantine, result.metrics
    else:
        kept, quarantine, metrics = _clean(_write(table, form, tmp_path), params.data, tmp_path)
    assert quarantine["row"].tolist() == OOPS
    assert quarantine["reason"].tolist() == ['px_5: "oops" is not a number'] * 5
    assert metrics["reasons"] == {"not a number": 5} and metrics["rows_kept"] == 195
    assert kept["px_5"].dtype == np.uint8  # the other values are numbers, and stay small


def test_words_past_the_share_fail_the_table_naming_the_first(params, tmp_path):
    table = tiny_image_table().astype({"px_5": str})
    table.loc[10:59, "px_5"] = "n/a?"  # 25% of the rows
    with pytest.raises(clean.ValidationFailed) as error:
        _clean(_write(table, "csv", tmp_path), params.data, tmp_path)
    assert "25.0% of rows would be quarantined" in str(error.value)
    assert '50 x not a number (e.g. row 10: px_5: "n/a?" is not a number)' in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.csv"]


def test_a_mostly_numeric_csv_column_stays_numeric_with_a_word_in_its_first_rows(tmp_path):
    """pyarrow infers a column's type from the first block: a word there made the whole column
    text, and a tabular table took it for a categorical one."""
    table = mixed_table(200)
    table["bill_length_mm"] = table["bill_length_mm"].astype(object)
    table.loc[2, "bill_length_mm"] = "oops"
    data = DataParams.model_validate(data_section("impute", source=""))
    kept, quarantine, metrics = _clean(_write(table, "csv", tmp_path), data, tmp_path)
    assert quarantine["reason"].tolist() == ['bill_length_mm: "oops" is not a number']
    assert kept["bill_length_mm"].dtype == np.float32
    assert metrics["categorical_features"] == 2  # island and sex, not bill_length_mm


def _ids(start: int) -> pd.DataFrame:
    """A table with an int64 id feature from `start` up, above 2**53 (no double holds each exactly)."""
    table = tiny_image_table()[["label", "px_10", "px_20"]].copy()
    table["px_id"] = np.int64(start) + np.arange(len(table), dtype=np.int64) * 2
    return table


ID_CONTRACT = DataParams(source="", label="label", feature_prefix="px_", classes=list(range(10)))


def test_int64_ids_above_2_53_are_hashed_and_kept_exactly(tmp_path):
    table = _ids(2**60)
    table.iloc[6] = table.iloc[5]
    table.loc[6, "px_id"] += 1  # 2**60 + 11: the same double as 2**60 + 10, another id
    table.iloc[40] = table.iloc[7]  # an exact repeat
    kept, quarantine, metrics = _clean(_write(table, "parquet", tmp_path), ID_CONTRACT, tmp_path)
    assert quarantine["row"].tolist() == [40]
    assert kept["px_id"].dtype == np.int64
    assert kept.loc[5:6, "px_id"].tolist() == [2**60 + 10, 2**60 + 11]


def test_the_range_check_is_exact_above_2_53(tmp_path):
    table = _ids(2**60 - 1000)
    table.loc[3, "px_id"] = 2**60 + 1  # just above the range's upper end (its nearest double is that end)
    table.loc[4, "px_id"] = 2**60  # the upper end itself
    contract = ID_CONTRACT.model_copy(update={"value_range": [0.0, float(2**60)]})
    kept, quarantine, _ = _clean(_write(table, "parquet", tmp_path), contract, tmp_path)
    assert quarantine["row"].tolist() == [3]
    assert quarantine["reason"].tolist() == [
        "feature value above range: px_id=1152921504606846977 outside [0, 1.15292e+18]"
    ]
    assert 2**60 in kept["px_id"].tolist()


def test_the_model_gets_int64_features_as_float32(tmp_path):
    """Training reads a mixed table's numeric columns as doubles: an int64 above 2**53 failed the cast."""
    table = mixed_table(200)
    table["tag"] = np.int64(2**60) + np.arange(200, dtype=np.int64)
    data = DataParams.model_validate(data_section("impute", source=""))
    kept, _, _ = _clean(_write(table, "parquet", tmp_path), data, tmp_path)
    assignment, _ = split.run(kept["species"].to_numpy(), SplitParams(folds=[0, 1]))
    rows = SplitTable.of(kept, assignment, data).raw_rows(train=assignment["split"].to_numpy() == "train")["train"]
    tag = [c.name for c in SplitTable.of(kept, assignment, data).contracts if c.kind == "numeric"].index("tag")
    assert rows.numeric.dtype == np.float32
    np.testing.assert_array_equal(np.unique(rows.numeric[:, tag]), [np.float32(2**60)])  # 7 digits of each id

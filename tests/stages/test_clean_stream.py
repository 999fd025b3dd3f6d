"""clean streams the table batch by batch and gives what the whole-table path gave: the same kept
rows, the same quarantine with the same reasons, the same metrics and report.

The whole-table path is the stage as it was before it streamed, kept in bench/inmemory_clean.py
as the benchmark's baseline; here it is the reference."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_image_table
from support import ROOT

from pipeline import batches, sinks
from pipeline.params import CleanParams, EngineParams
from pipeline.tables import write_parquet
from stages import clean, embed, split

LENIENT = CleanParams(min_rows=10, max_quarantine_share=0.2, max_duplicate_share=0.2)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


inmemory = _load("inmemory_clean")
bench = _load("data_stages")


def planted(table: pd.DataFrame) -> pd.DataFrame:
    """200 rows in batches of 37: bad rows in the first batch, duplicates of rows in earlier
    batches, and a bad row in the last batch (rows 185..199)."""
    table = table.copy()
    table["px_7"] = table["px_7"].astype(int)
    table.loc[3, "px_7"] = 99  # first batch
    table.iloc[150] = table.iloc[10]  # a duplicate four batches later
    table.iloc[74] = table.iloc[73]  # across the boundary between batch 1 (37..73) and batch 2
    table.iloc[199] = table.iloc[150]  # a duplicate of a duplicate, in the last batch
    table["px_5"] = table["px_5"].astype(float)
    table.loc[198, "px_5"] = np.nan  # last batch
    table["label"] = table["label"].astype(int)
    table.loc[197, "label"] = 42  # last batch
    return table


def assert_same(old: dict, new: clean.CleanResult) -> None:
    pd.testing.assert_frame_equal(old["clean"], new.clean)
    pd.testing.assert_frame_equal(old["quarantine"].reset_index(drop=True), new.quarantine)
    assert new.metrics == old["metrics"]
    assert new.report_html == old["report_html"]


def test_batches_give_what_the_whole_table_gave(params):
    table = planted(tiny_image_table())
    new = clean.run(table, params.data, LENIENT, batch_rows=37)
    assert_same(inmemory.run(table, params.data, LENIENT), new)
    # And what a person reading the table would expect:
    assert list(new.quarantine["row"]) == [3, 74, 150, 197, 198, 199]
    assert list(new.quarantine["reason"]) == [
        "feature value above range: px_7=99 outside [0, 16]",
        "exact duplicate of an earlier row",
        "exact duplicate of an earlier row",
        "unknown label 42",
        "missing feature value: px_5=nan",
        "exact duplicate of an earlier row",
    ]
    assert len(new.clean) == 194 and new.clean["px_7"].dtype == np.uint8


@pytest.mark.parametrize("batch_rows", [7, 50, 10_000])
def test_the_batch_size_changes_nothing(params, batch_rows):
    table = planted(tiny_image_table())
    reference = clean.run(table, params.data, LENIENT, batch_rows=13)
    result = clean.run(table, params.data, LENIENT, batch_rows=batch_rows)
    pd.testing.assert_frame_equal(reference.clean, result.clean)
    pd.testing.assert_frame_equal(reference.quarantine, result.quarantine)
    assert (reference.metrics, reference.report_html) == (result.metrics, result.report_html)


def test_validation_never_fingerprints_a_frame(params, monkeypatch):
    """GX hashes every row of each frame it validates (a batch marker, unless the frame is over
    1 GB); the whole-table checks get frames as long as the table, so that hash alone cost about
    40 bytes a row at once (270 MB at 7M rows). clean turns it off."""
    from great_expectations.execution_engine import pandas_execution_engine

    hashed: list[int] = []
    monkeypatch.setattr(pandas_execution_engine, "hash_pandas_dataframe", lambda df: hashed.append(len(df)) or "")
    result = clean.run(planted(tiny_image_table()), params.data, LENIENT, batch_rows=37)
    assert result.metrics["rows_in"] == 200 and hashed == []


def test_a_wide_table_is_written_in_few_row_groups():
    """The Parquet writer holds each row group's metadata until it closes (~0.7 MB per row group
    of 785 columns), so the row-group count of the clean table is part of clean's peak memory."""
    schema = pa.schema([pa.field(name, pa.uint8()) for name in ("label", *(f"px_{i}" for i in range(784)))])
    assert math.ceil(7_000_000 / sinks.row_group_rows(schema)) <= 45


def test_too_many_bad_rows_over_several_batches_fail_naming_the_first(params):
    table = tiny_image_table()
    table["px_9"] = table["px_9"].astype(int)
    table.loc[120:, "px_9"] = 17  # 80 rows, all in later batches
    with pytest.raises(clean.ValidationFailed) as error:
        clean.run(table, params.data, LENIENT, batch_rows=37)
    assert "40.0% of rows would be quarantined" in str(error.value)
    assert "80 x feature value above range (e.g. row 120: feature value above range: px_9=17" in str(error.value)


@pytest.fixture(scope="module")
def digits(tmp_path_factory, params):
    """The embedded data set, as the embed stage writes it."""
    path = tmp_path_factory.mktemp("embedded") / "digits.parquet"
    write_parquet(embed.run(params.embed, params.data), path)
    return path


def run_files(source, params, tmp_path, **clean_changes) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    run_params = params.model_copy(update={"clean": params.clean.model_copy(update=clean_changes)})
    out, quarantine = tmp_path / "clean.parquet", tmp_path / "quarantine.parquet"
    metrics, _ = clean.run_source(
        str(source), run_params.data, run_params.clean, run_params.engine, str(out), str(quarantine)
    )
    return pd.read_parquet(out), pd.read_parquet(quarantine), metrics


def test_embedded_set_file_to_file_as_before(digits, params, tmp_path):
    old = inmemory.run_file(digits, params.data, params.clean)
    kept, quarantine, metrics = run_files(digits, params, tmp_path, batch_mb=0.02)  # ~320-row batches
    pd.testing.assert_frame_equal(old["clean"], kept)
    assert metrics == old["metrics"] and len(quarantine) == len(old["quarantine"]) == 0


def test_files_are_byte_identical_whatever_the_batch_size(digits, params, tmp_path):
    table = planted(pd.read_parquet(digits))
    raw = tmp_path / "raw.parquet"
    table.to_parquet(raw)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    run_files(raw, params, tmp_path / "a", batch_mb=0.01)
    run_files(raw, params, tmp_path / "b", batch_mb=64)
    for name in ("clean.parquet", "quarantine.parquet"):
        a, b = sorted((tmp_path / "a" / name).iterdir()), sorted((tmp_path / "b" / name).iterdir())
        assert [p.name for p in a] == [p.name for p in b] == ["part-000000.parquet"]
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_csv_folder_streams_as_one_table(digits, params, tmp_path):
    """Two CSV files and a Parquet file; a gap (NaN) and a decimal in the last file's rows."""
    table = planted(pd.read_parquet(digits)).head(600)
    folder = tmp_path / "raw"
    folder.mkdir()
    table.iloc[:250].to_csv(folder / "a.csv", index=False)
    table.iloc[250:500].to_parquet(folder / "b.parquet")
    last = table.iloc[500:].copy()
    last["px_20"] = last["px_20"].astype(float)
    last.iloc[-1, last.columns.get_loc("px_20")] = 2.5  # a decimal, well after CSV type inference
    last.to_csv(folder / "c.csv", index=False)
    old = inmemory.run_file(folder, params.data, params.clean)
    kept, quarantine, metrics = run_files(folder, params, tmp_path, batch_mb=0.005)
    pd.testing.assert_frame_equal(old["clean"], kept)
    assert kept["px_20"].dtype == np.float32 and kept["px_0"].dtype == np.uint8
    assert metrics == old["metrics"]
    # CSV numbers stream as float64 (the whole-table path had int64); rows and reasons are the same.
    pd.testing.assert_frame_equal(old["quarantine"].reset_index(drop=True), quarantine, check_dtype=False)


def test_word_in_a_late_csv_block_quarantines_its_row_naming_column_and_value(params, digits, tmp_path, monkeypatch):
    """pyarrow's CSV reader stops at the word (it reads the column as numbers); the rest of the
    file is read as text from that row on, and only the row with the word is quarantined."""
    monkeypatch.setattr(batches, "CSV_BLOCK_BYTES", 16 << 10)  # ~60 rows per block: "abc" is in a late one
    table = pd.read_parquet(digits)
    table["px_3"] = table["px_3"].astype(str)
    table.loc[len(table) - 2, "px_3"] = "abc"
    raw = tmp_path / "raw.csv"
    table.to_csv(raw, index=False)
    kept, quarantine, metrics = run_files(raw, params, tmp_path, batch_mb=0.01)
    assert quarantine["row"].tolist() == [len(table) - 2]
    assert quarantine["reason"].tolist() == ['px_3: "abc" is not a number']
    assert metrics["reasons"] == {"not a number": 1} and len(kept) == len(table) - 1
    expected = table.drop(index=len(table) - 2).reset_index(drop=True)
    np.testing.assert_array_equal(kept["px_3"].to_numpy(), expected["px_3"].astype(float).to_numpy())


def test_failure_after_the_last_batch_leaves_no_file(params, tmp_path):
    table = tiny_image_table()
    table.iloc[1:40] = table.iloc[0]  # duplicate share 19.5%, known only once every batch is read
    raw = tmp_path / "raw.parquet"
    table.to_parquet(raw)
    with pytest.raises(clean.ValidationFailed, match="max_duplicate_share"):
        run_files(raw, params, tmp_path, batch_mb=0.002, max_quarantine_share=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.parquet"]


def test_split_reads_the_labels_and_never_the_features(params, tmp_path):
    """The clean table's feature columns are damaged on disk: split still works, because it never
    reads their bytes; reading a feature fails."""
    table = tiny_image_table(rows_per_class=30)
    path = tmp_path / "clean.parquet"
    table.to_parquet(path, compression=None)
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for i in range(1, meta.num_columns):  # every column but the label
        chunk = meta.row_group(0).column(i)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))
    with pytest.raises(OSError):
        pq.read_table(path, columns=["px_9"])
    metrics = split.run_file(str(path), params.data, params.split, params.engine, str(tmp_path / "split.parquet"))
    expected, _ = split.run(table["label"].to_numpy(), params.split)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "split.parquet"), expected)
    assert sum(metrics["rows"].values()) == len(table)


@pytest.mark.integration
def test_70k_synthetic_table_as_before(params, tmp_path):
    """MNIST-shaped, 70,000 rows x 785 columns, in 65,536-row groups with duplicates across them
    and unknown labels in the last one: the same clean rows, quarantine and reasons as before."""
    raw = tmp_path / "raw.parquet"
    planted_rows = bench.make_table(70_000, raw)
    contract = bench.contract()
    run_params = params.model_copy(update={"data": contract, "clean": bench.params("local").clean})
    old = inmemory.run_file(raw, contract, run_params.clean)
    kept, quarantine, metrics = run_files(raw, run_params, tmp_path, batch_mb=8)  # ~10k-row batches
    assert metrics == old["metrics"]
    assert metrics["rows_quarantined"] == planted_rows["duplicates"] + planted_rows["unknown_labels"]
    pd.testing.assert_frame_equal(old["clean"], kept)
    pd.testing.assert_frame_equal(old["quarantine"].reset_index(drop=True), quarantine)


def test_cli_runs_the_engine_named_in_params(params, digits, tmp_path, project_root):
    """`engine.name` is read by the stage: an unknown engine is a params error naming the key."""
    assert EngineParams().name == "local"
    bad = tmp_path / "params.yaml"
    bad.write_text((project_root / "params.yaml").read_text().replace("name: local", "name: duckdb"))
    cmd = [sys.executable, "-m", "stages.clean", "--params", str(bad), "--raw", str(digits)]
    cmd += [arg for name in ("out", "quarantine", "metrics", "report") for arg in (f"--{name}", str(tmp_path / name))]
    failed = subprocess.run(cmd, cwd=project_root, capture_output=True, text=True)
    assert failed.returncode == 1 and "engine.name" in failed.stderr

"""What the Spark tests share: the skip when there is no Java, a small table with bad rows in
several files and row groups, and running clean + split on an engine into a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_image_table

from pipeline.params import CleanParams, EngineParams, Params
from stages import clean, split

# Skips the module where Spark cannot run at all; the reason says what is missing.
needs_java = pytest.mark.skipif(
    shutil.which("java") is None, reason="no Java runtime on this machine: Spark 4 needs Java 17 (`java -version`)"
)
LENIENT = CleanParams(min_rows=10, max_quarantine_share=0.2, max_duplicate_share=0.2, batch_mb=0.005)


def planted_folder(folder: Path) -> Path:
    """200 digit rows in two Parquet files of 40-row row groups: duplicates across a row group's
    and a file's boundary, a value out of range early, and bad rows in the last row group."""
    table = tiny_image_table()
    table["px_7"] = table["px_7"].astype(int)
    table.loc[3, "px_7"] = 99
    table.iloc[80] = table.iloc[79]  # across a row group boundary
    table.iloc[120] = table.iloc[10]  # in the second file, of a row in the first
    table.iloc[199] = table.iloc[120]  # a duplicate of a duplicate, in the last row group
    table["px_5"] = table["px_5"].astype(float)
    table.loc[198, "px_5"] = np.nan
    table["label"] = table["label"].astype(int)
    table.loc[197, "label"] = 42
    folder.mkdir(parents=True)
    for name, part in (("a.parquet", table.iloc[:100]), ("b.parquet", table.iloc[100:])):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / name, row_group_size=40)
    return folder


def run_stages(source: Path, params: Params, engine: EngineParams, out: Path, contract=None, clean_params=None) -> dict:
    """clean then split on `engine`; returns the metrics, the report and the split assignment."""
    out.mkdir(parents=True, exist_ok=True)
    data = contract or params.data
    metrics, report = clean.run_source(
        str(source), data, clean_params or LENIENT, engine, str(out / "clean.parquet"), str(out / "quarantine.parquet")
    )
    assignment, _ = split.run_file(str(out / "clean.parquet"), data, params.split, engine)
    return {"metrics": metrics, "report": report, "split": assignment}


def assert_same_outputs(local_dir: Path, local: dict, spark_dir: Path, spark: dict) -> None:
    """The same files byte for byte, the same metrics, report and split."""
    for name in ("clean.parquet", "quarantine.parquet"):
        assert (local_dir / name).read_bytes() == (spark_dir / name).read_bytes(), name
    assert spark["metrics"] == local["metrics"]
    assert spark["report"] == local["report"]
    pd.testing.assert_frame_equal(local["split"], spark["split"])

"""What the Spark tests share: the skip when there is no Java, a small table with bad rows in
several files and row groups, and running clean + split on an engine into a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
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
# Units of about 80 digit rows (65 bytes a row): the planted folder's 40-row groups make 4 units.
SMALL_UNITS = {"unit_mb": 0.005}


def planted_folder(folder: Path) -> Path:
    """200 digit rows: a Parquet file of 40-row row groups (rows 0-99, its px_5 written as text)
    and a CSV file (rows 100-199). Duplicates across a row group's and a file's boundary, a value
    out of range early, a value that is not a number in each file, and bad rows at the end."""
    table = tiny_image_table()
    table["px_7"] = table["px_7"].astype(int)
    table.loc[3, "px_7"] = 99
    table.iloc[80] = table.iloc[79]  # across a row group boundary
    table.iloc[120] = table.iloc[10]  # in the second file, of a row in the first
    table.iloc[199] = table.iloc[120]  # a duplicate of a duplicate, in the last rows
    table["px_5"] = table["px_5"].astype(float)
    table.loc[198, "px_5"] = np.nan
    table["label"] = table["label"].astype(int)
    table.loc[197, "label"] = 42
    first = table.iloc[:100].astype({"px_5": str})
    first.loc[20, "px_5"] = "oops"  # text in a Parquet column of numbers
    second = table.iloc[100:].astype({"px_11": str})
    second.loc[150, "px_11"] = "1,5"  # a decimal comma in a CSV export
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(first, preserve_index=False), folder / "a.parquet", row_group_size=40)
    second.to_csv(folder / "b.csv", index=False)
    return folder


PLANTED = {  # row -> reason
    3: "feature value above range: px_7=99 outside [0, 16]",
    20: 'px_5: "oops" is not a number',
    80: "exact duplicate of an earlier row",
    120: "exact duplicate of an earlier row",
    150: 'px_11: "1,5" is not a number',
    197: "unknown label 42",
    198: "missing feature value: px_5=nan",
    199: "exact duplicate of an earlier row",
}


OUTPUTS = ("clean.parquet", "quarantine.parquet", "split.parquet")


def run_stages(
    source: Path | str, params: Params, engine: EngineParams, out: Path, contract=None, clean_params=None
) -> dict:
    """clean then split on `engine` into `out`; returns the metrics and the report of each."""
    out.mkdir(parents=True, exist_ok=True)
    data = contract or params.data
    metrics, report = clean.run_source(
        str(source), data, clean_params or LENIENT, engine, str(out / "clean.parquet"), str(out / "quarantine.parquet")
    )
    split_metrics = split.run_file(str(out / "clean.parquet"), data, params.split, engine, str(out / "split.parquet"))
    return {"metrics": metrics, "report": report, "split": split_metrics}


def assert_same_outputs(local_dir: Path, local: dict, spark_dir: Path, spark: dict) -> None:
    """The same tables byte for byte, part for part; the same metrics and report."""
    for name in OUTPUTS:
        ours = sorted(p.name for p in (local_dir / name).iterdir())
        theirs = sorted(p.name for p in (spark_dir / name).iterdir())
        assert ours == theirs and ours, name
        for part in ours:
            assert (local_dir / name / part).read_bytes() == (spark_dir / name / part).read_bytes(), f"{name}/{part}"
    assert spark["metrics"] == local["metrics"]
    assert spark["report"] == local["report"]
    assert spark["split"] == local["split"]

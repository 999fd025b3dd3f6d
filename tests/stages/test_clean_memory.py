"""clean's memory does not grow with the table: what the local engine holds between batches is one
report per unit of work and the duplicates' row numbers, not a byte per row.

Measured with tracemalloc (Python objects and NumPy arrays; Arrow's buffers are batch-sized and
the same at both sizes): the peak of an 80,000-row clean against a 20,000-row one, both in 10,000-row
batches (GX holds on to the last batch it validated, so each size needs several).
The whole-run peak RSS at 700k and 7M MNIST-shaped rows is bench/data_stages.py's."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.params import CleanParams, DataParams, EngineParams
from stages import clean

CONTRACT = DataParams(source="", label="label", feature_prefix="px_", classes=list(range(10)))
PARAMS = CleanParams(min_rows=10, max_quarantine_share=0.05, batch_mb=0.1)  # 10k-row batches (10 bytes a row)


def _peak(rows: int, folder) -> int:
    rng = np.random.default_rng(rows)
    table = pa.table(
        {
            "label": rng.integers(0, 10, rows).astype(np.uint8),
            "px_0": rng.integers(0, 2**31, rows),  # distinct rows: nothing is a duplicate
            "px_1": rng.random(rows).astype(np.float32),
        }
    )
    raw = folder / f"raw-{rows}.parquet"
    pq.write_table(table, raw, row_group_size=10_000)
    out = folder / f"out-{rows}"
    tracemalloc.start()
    try:
        clean.run_source(str(raw), CONTRACT, PARAMS, EngineParams(), str(out / "clean"), str(out / "quarantine"))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_clean_holds_nothing_per_row(tmp_path):
    _peak(2_000, tmp_path)  # the first run pays for GX's set-up
    small, large = _peak(20_000, tmp_path), _peak(80_000, tmp_path)
    assert pd.read_parquet(tmp_path / "out-80000" / "clean").shape == (80_000, 3)
    # 60,000 more rows: under 2 bytes a row of growth (the duplicates' hash set alone was 8 bytes
    # a row; GX's store of every batch's results and the whole-table frames came on top)
    assert large - small < 120_000, f"peak {small / 2**20:.2f} MB at 20k rows, {large / 2**20:.2f} MB at 80k"

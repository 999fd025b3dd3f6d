"""The embedded digits set as a clean table, and a shifted copy of it: data for the drift tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = [f"px_{i}" for i in range(64)]


def digits_table() -> pd.DataFrame:
    """The embedded data: scikit-learn's digits, as the clean stage keeps it (uint8)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    table = pd.DataFrame(digits.data.astype(np.uint8), columns=FEATURES)
    table.insert(0, "label", digits.target.astype(np.uint8))
    return table


def write(table: pd.DataFrame, path: Path, row_group_size: int | None = None) -> Path:
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path, row_group_size=row_group_size)
    return path


def shifted(table: pd.DataFrame, pixels: int = 1) -> pd.DataFrame:
    """Every image moved `pixels` to the right (the left columns become blank)."""
    images = table[FEATURES].to_numpy().reshape(-1, 8, 8)
    moved = np.zeros_like(images)
    moved[:, :, pixels:] = images[:, :, :-pixels]
    out = pd.DataFrame(moved.reshape(-1, 64), columns=FEATURES)
    out.insert(0, "label", table["label"].to_numpy())
    return out

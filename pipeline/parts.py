"""A table stored as a folder of Parquet parts, read in part order as one table.

clean and split write their tables this way on both engines (`data/clean.parquet/part-000000.parquet`,
...): part i holds the rows of the source's i-th unit of work (`pipeline.units`), so a Spark
executor writes its own part and no process ever writes the whole table. Row i of the table is
row i of the parts read in order. A single Parquet file reads as a table of one part (a table
written before clean wrote folders, or by a test).

Readers hold one part's footer at a time, never the whole table's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StageError

PART = re.compile(r"part-(\d{6})\.parquet")


class PartsError(StageError):
    """The path holds no table: neither a Parquet file nor a folder of parts."""


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def part_files(path: str | Path) -> list[Path]:
    """The parts of the table at `path`, in row order (a file is its own only part)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PartsError(f"{path}: not found; run the stage that writes it (dvc repro)")
    parts = sorted(p for p in path.iterdir() if PART.fullmatch(p.name))
    if not parts:
        raise PartsError(
            f"{path}: a folder without Parquet parts (part-NNNNNN.parquet); rerun the stage that writes it"
        )
    return parts


def part_rows(path: str | Path) -> list[int]:
    """The row count of each part, from the footers."""
    return [pq.ParquetFile(p).metadata.num_rows for p in part_files(path)]


def num_rows(path: str | Path) -> int:
    return sum(part_rows(path))


def schema(path: str | Path) -> pa.Schema:
    return pq.read_schema(part_files(path)[0]).remove_metadata()


def row_groups(path: str | Path) -> Iterator[tuple[int, Callable[[list[str]], pa.Table]]]:
    """(rows, read(columns) -> those columns of its rows) for each row group of the table, in order;
    one part is open at a time."""
    for part in part_files(path):
        with pq.ParquetFile(part) as reader:
            for i in range(reader.metadata.num_row_groups):
                yield reader.metadata.row_group(i).num_rows, partial(reader.read_row_group, i)


def iter_batches(path: str | Path, columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    for part in part_files(path):
        with pq.ParquetFile(part) as reader:
            yield from reader.iter_batches(batch_size=batch_size, columns=columns)


def read_column(path: str | Path, name: str) -> np.ndarray:
    """One column of the table in row order, read a row group at a time; no other column is read."""
    kind = schema(path).field(name).type
    chunks = [read([name]).column(name) for _, read in row_groups(path)]
    return pa.chunked_array(chunks, kind).to_numpy()


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The whole table (small tables: the split assignment, tests)."""
    tables = [pq.read_table(p, columns=columns) for p in part_files(path)]
    return pa.concat_tables(tables, promote_options="permissive").replace_schema_metadata(None)

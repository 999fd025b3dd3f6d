"""Reading a Parquet file a row group at a time with that row group's metadata only."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import batches, row_groups, units
from pipeline.params import DataParams


def table(rows: int = 1_000) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "label": pa.array(rng.integers(0, 10, rows), pa.uint8()),
            "x": pa.array(rng.random(rows)),
            "maybe": pa.array([None if i % 7 == 0 else float(i) for i in range(rows)]),
            "flag": pa.array(rng.random(rows) < 0.5),
            "word": pa.array([f"w{i % 13}" for i in range(rows)]),
            "tags": pa.array([[i % 3, i % 5] for i in range(rows)], pa.list_(pa.int16())),
        }
    )


@pytest.mark.parametrize("options", [{}, {"compression": "zstd", "write_page_index": True}, {"use_dictionary": False}])
def test_each_row_group_reads_as_pyarrow_reads_it(tmp_path, options):
    path = tmp_path / "t.parquet"
    written = table()
    pq.write_table(written, path, row_group_size=60, **options)  # 17 groups: a list size past 14
    whole = pq.ParquetFile(path)
    groups = list(row_groups.row_groups(path))
    assert len(groups) == whole.num_row_groups == 17
    for i, group in enumerate(groups):
        assert group.equals(whole.read_row_group(i))
    assert pa.concat_tables(groups).equals(written)
    assert [g.column_names for g in row_groups.row_groups(path, ["x", "label"])] == [["x", "label"]] * 17


def test_a_cut_footer_describes_one_row_group(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(table(), path, row_group_size=250)
    full = row_groups.read_footer(path)
    footers = row_groups.cut_footer(full)
    assert len(footers) == 4
    whole = pq.ParquetFile(path).metadata
    for i, footer in enumerate(footers):
        meta = row_groups._metadata(footer)
        assert meta.num_row_groups == 1  # what a reader holds while it reads group i
        assert meta.row_group(0).to_dict() == whole.row_group(i).to_dict()
        assert meta.schema.equals(whole.schema)
        assert len(footer) < len(full)


def test_the_raw_stream_reads_through_cut_footers(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    written = table().select(["label", "x"])
    pq.write_table(written, path, row_group_size=300)
    opened: list[int] = []
    real = pq.ParquetFile

    def spy(source, *args, metadata=None, **kwargs):
        opened.append(metadata.num_row_groups if metadata is not None else -1)
        return real(source, *args, metadata=metadata, **kwargs)

    monkeypatch.setattr(row_groups.pq, "ParquetFile", spy)
    stream = batches.open_source(path, DataParams(source="", label="label", classes=[0, 1]), batch_mb=0.001)
    plan = units.plan(stream, unit_mb=0.003)  # 349 rows of 9 bytes a unit: one 300-row group each
    assert [u.groups for u in plan] == [(0,), (1,), (2,), (3,)]
    read = [batch.rows for unit in plan for batch in units.read(stream, unit)]
    assert opened == [1, 1, 1, 1]  # never a reader holding the whole footer
    assert pa.Table.from_batches(read).equals(written)


def test_a_footer_it_cannot_cut_is_read_by_pyarrow(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    pq.write_table(table(), path, row_group_size=400)

    def refuse(meta):
        raise row_groups.FooterError("a type this reader does not know")

    monkeypatch.setattr(row_groups, "cut_footer", refuse)
    assert pa.concat_tables(row_groups.row_groups(path)).equals(pq.read_table(path))


def test_a_file_without_rows_reads_as_pyarrow_reads_it(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(table().slice(0, 0), path)  # pyarrow writes one empty row group
    groups = list(row_groups.row_groups(path))
    assert [g.num_rows for g in groups] == [0] * pq.ParquetFile(path).num_row_groups
    assert pa.concat_tables(groups).schema.equals(pq.read_schema(path))


def test_not_a_parquet_footer_is_a_footer_error(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1" + b"x" * 40 + b"PARE")
    with pytest.raises(row_groups.FooterError, match="encrypted"):
        row_groups.read_footer(path)

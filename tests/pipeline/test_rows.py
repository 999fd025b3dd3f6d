"""The one rows type: split selection, label mapping, the "rerun split" check, reading only what is asked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import rows as rows_module
from pipeline.errors import StageError
from pipeline.rows import Rows, RowsError, SplitTable, stored_dtype
from pipeline.tables import write_parquet


def assignment_for(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """A shuffled assignment (rows in any order, as a file may hold them): every third row test,
    every third val, the rest train in folds 0/1."""
    rows = np.arange(len(table))
    split = np.array(["train", "val", "test"])[rows % 3]
    fold = np.where(split == "train", rows % 2, -1).astype(np.int8)
    frame = pd.DataFrame({"row": rows, "split": pd.Categorical(split, ["train", "val", "test"]), "fold": fold})
    return frame.sample(frac=1.0, random_state=seed, ignore_index=True)


def test_a_split_in_table_order_with_stored_dtype_and_class_indices(image_table, params):
    table = SplitTable.of(image_table, assignment_for(image_table), params.data)
    test = table.split_rows("test")
    expected = image_table.iloc[2::3]
    assert test.x.dtype == np.uint8  # pixels stay uint8
    np.testing.assert_array_equal(test.x, expected.filter(like="px_").to_numpy())
    assert test.y.dtype == np.int64
    np.testing.assert_array_equal(test.y, expected["label"].to_numpy())  # classes 0..9 are their own indices
    assert test.float32(1, 3).dtype == np.float32 and test.float32(1, 3).shape == (2, 64)


def test_labels_become_indices_into_data_classes(image_table, params):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    table = image_table.assign(label=np.array(names, dtype=object)[image_table["label"]])
    data = params.data.model_copy(update={"classes": list(reversed(names))})
    rows = SplitTable.of(table, assignment_for(table), data).split_rows("train")
    train_labels = image_table["label"].to_numpy()[np.arange(len(table)) % 3 == 0]
    np.testing.assert_array_equal(rows.y, 9 - train_labels)


def test_several_parts_in_one_pass_from_a_parquet_file(tmp_path, image_table, params, monkeypatch):
    """A file is read a row group and a few columns at a time; parts spanning row groups and
    column groups come out whole, and equal to the in-memory path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(rows_module, "READ_BYTES", 37 * 3)  # 3 uint8 columns of a 37-row group
    path = tmp_path / "clean.parquet"
    arrow = pa.Table.from_pandas(image_table.assign(note="not a feature"), preserve_index=False)
    pq.write_table(arrow, path, row_group_size=37)
    assert pq.ParquetFile(path).metadata.num_row_groups == 6
    assignment = assignment_for(image_table)
    write_parquet(assignment, tmp_path / "split.parquet")
    from_file = SplitTable.open(path, tmp_path / "split.parquet", params.data)
    in_memory = SplitTable.of(image_table, assignment, params.data)
    assert from_file.features == in_memory.features == [f"px_{i}" for i in range(64)]
    masks = {"held_out": (from_file.splits == "train") & (from_file.folds == 1), "val": from_file.splits == "val"}
    parts = from_file.rows(**masks)
    for name, mask in masks.items():
        np.testing.assert_array_equal(parts[name].x, image_table.filter(like="px_").to_numpy()[mask])
        np.testing.assert_array_equal(parts[name].y, image_table["label"].to_numpy()[mask])
        np.testing.assert_array_equal(parts[name].x, in_memory.rows(**{name: mask})[name].x)


@pytest.mark.parametrize("change", ["fewer", "duplicate"])
def test_an_assignment_of_another_table_is_refused(image_table, params, change):
    assignment = assignment_for(image_table)
    if change == "fewer":
        assignment = assignment.iloc[:-5]
    else:
        assignment.loc[0, "row"] = assignment.loc[1, "row"]
    with pytest.raises(RowsError, match=r"does not match the clean table \(200 rows\); rerun split"):
        SplitTable.of(image_table, assignment, params.data)


def test_an_unknown_label_is_named(image_table, params):
    table = image_table.copy()
    table.loc[2, "label"] = 42  # row 2 is a test row
    split_table = SplitTable.of(table, assignment_for(table), params.data)
    with pytest.raises(RowsError, match=r"test rows hold labels \[42\].*data.classes"):
        split_table.split_rows("test")
    split_table.split_rows("train")  # a part without the row reads fine


def test_an_empty_part_is_an_error_a_person_can_act_on(image_table, params):
    assignment = assignment_for(image_table).assign(split=lambda f: f["split"].astype(str).replace("val", "train"))
    with pytest.raises(StageError, match=r"no val rows.*split"):
        SplitTable.of(image_table, assignment, params.data).split_rows("val")


def test_stored_dtype_keeps_small_integers_only():
    import pyarrow as pa

    assert stored_dtype([pa.uint8(), pa.uint8()]) == np.uint8
    assert stored_dtype([pa.uint8(), pa.int16()]) == np.int16
    assert stored_dtype([pa.uint8(), pa.float32()]) == np.float32
    assert stored_dtype([pa.int64()]) == np.float32  # never float64 (and not int64: no model takes it)
    assert stored_dtype([pa.float64()]) == np.float32


def test_take_and_len():
    rows = Rows(np.arange(12, dtype=np.uint8).reshape(4, 3), np.array([0, 1, 0, 1]))
    assert len(rows.take(rows.y == 1)) == 2
    np.testing.assert_array_equal(rows.take(np.array([3])).x, [[9, 10, 11]])

"""Data profiles and their comparison (pipeline/drift.py), on the embedded digits set: a copy that
is not shifted scores near zero, a shifted copy scores high on the features it moved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from drift_data import FEATURES, digits_table, shifted, write

from pipeline import drift
from pipeline.drift import DriftError, Profile, compare, profile, psi


def drift_of(reference: pd.DataFrame, current: pd.DataFrame, tmp_path: Path, bins: int = 10):
    ref, _ = profile(write(reference, tmp_path / "ref.parquet"), "label", FEATURES, bins, 20_000)
    cur, on_ref = profile(write(current, tmp_path / "cur.parquet"), "label", FEATURES, bins, 20_000, on=ref)
    return compare(ref, cur, on_ref)


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    small, large = psi([0.5, 0.5], [0.45, 0.55]), psi([0.5, 0.5], [0.1, 0.9])
    assert 0 < small < 0.1 < 0.25 < large
    # an emptied bin scores high, not infinite
    assert np.isfinite(psi([0.5, 0.5], [0.0, 1.0])) and psi([0.5, 0.5], [0.0, 1.0]) > 2


def test_the_same_data_scores_exactly_zero(tmp_path: Path) -> None:
    table = digits_table()
    report = drift_of(table, table, tmp_path)
    assert report.rows == report.reference_rows == len(table) and report.rows_change == 0
    assert report.max_psi == 0.0 and report.class_psi == 0.0 and report.class_tvd == 0.0
    assert len(report.features) == 64


def test_an_unshifted_copy_scores_near_zero(tmp_path: Path) -> None:
    """Two random halves of the embedded data: the same distribution, different rows."""
    table = digits_table().sample(frac=1.0, random_state=0).reset_index(drop=True)
    half = len(table) // 2
    report = drift_of(table.iloc[:half], table.iloc[half:], tmp_path)
    assert report.max_psi < 0.1, report.features[:3]
    assert report.mean_psi < 0.03
    assert report.class_psi < 0.1 and report.class_tvd < 0.1  # sampling noise of ~900 rows a side: ~0.02-0.03
    assert report.drifted(0.25) == []


def test_a_shifted_copy_scores_high_on_the_moved_features(tmp_path: Path) -> None:
    table = digits_table()
    report = drift_of(table, shifted(table), tmp_path)
    drifted = {f.feature for f in report.drifted(0.25)}
    assert len(drifted) >= 16, report.features[:5]
    # the second column gets what the (near-blank) first column had: px_9 (row 1, col 1) is one of them
    assert "px_9" in drifted
    assert report.max_psi > 1.0
    assert report.class_psi == 0.0  # the labels did not move


def test_a_class_balance_shift_is_measured(tmp_path: Path) -> None:
    table = digits_table()
    fewer_zeros = pd.concat([table[table.label != 0], table[table.label == 0].iloc[:20]], ignore_index=True)
    report = drift_of(table, fewer_zeros, tmp_path)
    reference_share, current_share = report.class_shares["0"]
    assert reference_share == pytest.approx(178 / 1797) and current_share == pytest.approx(20 / len(fewer_zeros))
    assert report.class_psi > 0.1 and report.class_tvd > 0.05
    assert report.rows_change == -158 and report.rows_change_share == pytest.approx(-158 / 1797)


def test_profiles_are_the_same_whatever_the_row_groups_and_batches(tmp_path: Path, monkeypatch) -> None:
    """Streamed: a table in many row groups, read a few rows at a time, gives the same profile."""
    table = digits_table()
    whole, _ = profile(write(table, tmp_path / "one.parquet"), "label", FEATURES, 10, 20_000)
    monkeypatch.setattr(drift, "BATCH_ROWS", 97)
    pieces, _ = profile(write(table, tmp_path / "many.parquet", row_group_size=250), "label", FEATURES, 10, 20_000)
    assert pieces == whole


def test_bin_edges_from_a_sample_still_count_every_row(tmp_path: Path) -> None:
    table = digits_table()
    sampled, _ = profile(write(table, tmp_path / "t.parquet"), "label", FEATURES, 10, 100)
    assert sampled.rows == len(table)
    assert all(sum(bins.counts) == len(table) for bins in sampled.features.values())
    assert sum(sampled.classes.values()) == len(table)


def test_a_profile_survives_json(tmp_path: Path) -> None:
    import json

    found, _ = profile(write(digits_table(), tmp_path / "t.parquet"), "label", FEATURES, 10, 20_000)
    assert Profile.from_json(json.loads(json.dumps(found.to_json()))) == found
    with pytest.raises(DriftError, match="not a data profile"):
        Profile.from_json({"rows": 3})


def test_different_features_are_a_contract_change_not_drift(tmp_path: Path) -> None:
    table = digits_table()
    ref, _ = profile(write(table, tmp_path / "ref.parquet"), "label", FEATURES, 10, 20_000)
    fewer = FEATURES[:-1]
    cur, on_ref = profile(write(table, tmp_path / "cur.parquet"), "label", fewer, 10, 20_000, on=ref)
    with pytest.raises(DriftError, match=r"gone \['px_63'\]"):
        compare(ref, cur, on_ref)


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    path = write(digits_table().drop(columns=["px_5"]), tmp_path / "t.parquet")
    with pytest.raises(DriftError, match=r"no column\(s\) \['px_5'\]"):
        profile(path, "label", FEATURES, 10, 20_000)

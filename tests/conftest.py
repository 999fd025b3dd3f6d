"""Fixtures shared by every test folder: the project's params and small in-memory tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestration.params import ProjectParams, load_project_params

# The Airflow fixtures (homes, toy projects, an api-server) for tests/dags and tests/devtools alike.
pytest_plugins = ["airflow_fixtures"]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def params() -> ProjectParams:
    """The project's params.yaml, as committed (every section checked by its owner)."""
    return load_project_params(ROOT / "params.yaml")


def tiny_image_table(rows_per_class: int = 20, seed: int = 0) -> pd.DataFrame:
    """A digits-shaped table (label + px_0..px_63, values 0..16) with learnable classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    picks = np.concatenate(
        [rng.choice(np.flatnonzero(digits.target == c), rows_per_class, replace=False) for c in range(10)]
    )
    table = pd.DataFrame(digits.data[picks].astype(np.uint8), columns=[f"px_{i}" for i in range(64)])
    table.insert(0, "label", digits.target[picks].astype(np.uint8))
    return table


@pytest.fixture
def image_table() -> pd.DataFrame:
    return tiny_image_table()

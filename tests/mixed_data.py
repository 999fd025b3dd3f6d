"""A synthetic mixed table (the shape of the well-known penguins table) for the tests and benchmarks
of categorical columns and missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
ISLANDS = {"Adelie": ["Biscoe", "Dream", "Torgersen"], "Chinstrap": ["Dream"], "Gentoo": ["Biscoe"]}
GAPPY = ("bill_length_mm", "body_mass_g", "sex")


def mixed_table(n: int = 360, seed: int = 0, gaps: float = 0.05) -> pd.DataFrame:
    """Penguin-like rows: a text label, two text columns (island, sex), four measurements and a
    year; about `gaps` of bill_length_mm, body_mass_g and sex are missing."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    species = np.array(SPECIES)[y]
    sex = rng.choice(["male", "female"], n).astype(object)
    table = pd.DataFrame(
        {
            "species": species,
            "island": [rng.choice(ISLANDS[s]) for s in species],
            "bill_length_mm": np.array([38.8, 48.8, 47.5])[y] + rng.normal(0, 2.5, n),
            "bill_depth_mm": np.array([18.3, 18.4, 15.0])[y] + rng.normal(0, 1.0, n),
            "flipper_length_mm": np.array([190.0, 196.0, 217.0])[y] + rng.normal(0, 6.0, n),
            "body_mass_g": np.array([3700.0, 3730.0, 5070.0])[y] + (sex == "male") * 400 + rng.normal(0, 250, n),
            "sex": sex,
            "year": rng.choice([2007, 2008, 2009], n),
        }
    )
    for name in GAPPY:
        table.loc[rng.random(n) < gaps, name] = None
    return table


def data_section(missing: str, columns: dict | None = None, source: str = "unused") -> dict:
    """params.yaml's `data:` for the mixed table (label `species`, columns by name, no image)."""
    return {
        "source": source,
        "label": "species",
        "feature_prefix": "",
        "image_shape": None,
        "value_range": None,
        "classes": SPECIES,
        "missing": missing,
        "columns": columns or {},
    }

"""embed: the bundled data set as a raw table, cut into dated batches."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.params import EmbedParams
from stages import _cli, embed


def test_digits_table_matches_the_contract(params):
    table = embed.run(params.embed.model_copy(update={"as_of": None}), params.data)
    assert table.shape == (1797, 65)
    assert list(table.columns[:3]) == ["label", "px_0", "px_1"]
    assert table["px_0"].dtype == np.uint8


def test_batches_arrive_weekly(params):
    first = EmbedParams(batches=4, first_batch="2026-01-05", as_of="2026-01-12")
    assert len(embed.run(first, params.data)) == pytest.approx(1797 / 2, abs=2)
    assert len(embed.run(first.model_copy(update={"as_of": "2026-03-01"}), params.data)) == 1797
    with pytest.raises(_cli.StageError, match="before the first batch"):
        embed.run(first.model_copy(update={"as_of": "2025-12-31"}), params.data)


def test_every_batch_has_every_class(params):
    table = embed.run(EmbedParams(batches=6, as_of="2026-01-05"), params.data)
    assert set(table["label"]) == set(range(10))

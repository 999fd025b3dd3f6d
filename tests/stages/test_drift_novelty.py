"""The drift report's novelty line: the share of the new table's rows above a served autoencoder's threshold."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_image_table
from novelty_support import detector, parts
from support import ROOT

from pipeline import autoencoder, novelty_format
from pipeline.drift import summary_markdown
from pipeline.tables import write_parquet
from stages import drift


@pytest.fixture(scope="module")
def served_novelty(tmp_path_factory, params):
    """A novelty file as a served version's novelty stage writes it (trained on the tiny digits)."""
    rows = parts(tiny_image_table(), params)
    model, threshold = detector(rows["train"], params, epochs=30)
    path = tmp_path_factory.mktemp("served") / "novelty.pt"
    metrics = {"quantile": params.novelty.quantile, "threshold": threshold}
    autoencoder.save(path, model, threshold=threshold, metrics=metrics)
    return path


def test_scrambled_half_of_the_table_shows_in_the_share(tmp_path, params, served_novelty):
    table = tiny_image_table(seed=3)  # other digits than the detector's training rows, mostly
    features = [c for c in table.columns if c.startswith("px_")]
    familiar = tmp_path / "familiar.parquet"
    write_parquet(table, familiar)
    scrambled = table.copy()
    rng = np.random.default_rng(0)
    half = np.arange(len(table)) % 2 == 0
    scrambled.loc[half, features] = np.stack([rng.permutation(r) for r in table.loc[half, features].to_numpy()])
    mixed = tmp_path / "mixed.parquet"
    write_parquet(scrambled, mixed)
    reference = drift.Reference(None, None)

    calm = drift.run(familiar, reference, params.data, params.drift, served_novelty).metrics["novelty"]
    result = drift.run(mixed, reference, params.data, params.drift, served_novelty)
    line = result.metrics["novelty"]

    assert calm["rows"] == line["rows"] == len(table)
    assert calm["share_above_threshold"] < 0.25  # unseen digits, a tiny detector: a few flagged
    assert line["share_above_threshold"] > calm["share_above_threshold"] + 0.35  # the scrambled half shows
    assert line["expected_share"] == pytest.approx(1 - params.novelty.quantile)
    assert "above the novelty threshold" in result.report_html
    assert "- novelty: " in summary_markdown(result.metrics)


def test_without_a_novelty_file_or_with_a_disabled_one_nothing_changes(tmp_path, params):
    path = tmp_path / "clean.parquet"
    write_parquet(tiny_image_table(), path)
    off = tmp_path / "off.pt"
    novelty_format.write_disabled(off)
    plain = drift.run(path, drift.Reference(None, None), params.data, params.drift)
    disabled = drift.run(path, drift.Reference(None, None), params.data, params.drift, off)
    assert "novelty" not in plain.metrics and plain.metrics == disabled.metrics
    assert plain.report_html == disabled.report_html
    # a path where nothing is (nothing served yet) is no novelty line either, not an error
    missing = drift.run(path, drift.Reference(None, None), params.data, params.drift, tmp_path / "none.pt")
    assert missing.metrics == plain.metrics


def test_a_disabled_novelty_file_costs_no_torch_import(tmp_path, params):
    """The drift stage runs every time: with the default (a served version without an autoencoder)
    it must not pay torch's import."""
    import subprocess
    import sys

    path = tmp_path / "clean.parquet"
    write_parquet(tiny_image_table(), path)
    off = tmp_path / "off.pt"
    novelty_format.write_disabled(off)
    script = (
        "import sys; from pipeline.params import Params; from stages import drift; "
        f"p = Params.model_validate({params.model_dump(mode='json')!r}); "
        f"drift.run({str(path)!r}, drift.Reference(None, None), p.data, p.drift, {str(off)!r}); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr[-2000:]

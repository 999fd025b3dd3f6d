"""The novelty autoencoder: it learns what digits look like, and only that.

One autoencoder per module, trained by the novelty stage's core on the full digits set (the
project's params, as committed, with `enabled` aside): a couple of seconds on one core.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import autoencoder, novelty_format
from pipeline.rows import SplitTable
from stages import novelty as novelty_stage


def digits_table() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    table = pd.DataFrame(digits.data.astype(np.uint8), columns=[f"px_{i}" for i in range(64)])
    table.insert(0, "label", digits.target.astype(np.uint8))
    return table


def assignment(n: int, seed: int = 0) -> pd.DataFrame:
    """70% train, 15% val, 15% test, shuffled (enough here; the split stage stratifies)."""
    order = np.random.default_rng(seed).permutation(n)
    split = np.empty(n, dtype=object)
    split[order[: int(0.7 * n)]] = "train"
    split[order[int(0.7 * n) : int(0.85 * n)]] = "val"
    split[order[int(0.85 * n) :]] = "test"
    return pd.DataFrame({"row": np.arange(n), "split": pd.Categorical(split, ["train", "val", "test"]), "fold": -1})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # models this small only lose time to threads on shared cores
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(params, one_thread):
    """(model, metrics, held-out test rows as float32) from the stage's core on digits."""
    table = digits_table()
    split = SplitTable.of(table, assignment(len(table)), params.data)
    model, metrics = novelty_stage.run(split, params.data, params.novelty)
    return model, metrics, split.split_rows("test").float32()


def test_held_out_digits_reconstruct_far_better_than_shuffled_pixels(trained):
    """Same pixel values, same rows, only the pixel order scrambled: the autoencoder learnt the
    shapes of digits, not their value histogram."""
    model, _, test = trained
    rng = np.random.default_rng(1)
    shuffled = np.stack([rng.permutation(row) for row in test])
    held_out, scrambled = autoencoder.errors(model, test), autoencoder.errors(model, shuffled)
    assert np.median(scrambled) > 3 * np.median(held_out)
    assert np.mean(scrambled > np.quantile(held_out, 0.95)) > 0.9


def test_threshold_is_the_validation_quantile_and_test_rows_mostly_pass(trained, params):
    _, metrics, _ = trained
    assert metrics["quantile"] == params.novelty.quantile
    assert metrics["threshold"] == pytest.approx(metrics["val"]["error_p99"], rel=0.2)  # q = 0.99 by default
    val = metrics["val"]
    assert val["share_above_threshold"] <= 1 - params.novelty.quantile + 1 / val["rows"]  # interpolated quantile
    # Unseen digits: flagged at about the rate the quantile implies, not wholesale.
    assert metrics["test"]["share_above_threshold"] < 0.1
    assert metrics["train"]["error_mean"] < metrics["val"]["error_mean"] * 1.5


@pytest.mark.parametrize("how", ["padded", "cut"])
def test_breast_cancer_rows_fed_to_the_digits_model_score_above_the_threshold(trained, how):
    """Rows of another table brought to the digits' width: every one is flagged as they are, and
    nearly every one even after rescaling each feature into the pixels' range [0, 16]."""
    from sklearn.datasets import load_breast_cancer

    model, metrics, _ = trained
    cancer = load_breast_cancer().data  # 569 x 30, values from 0 to a few thousand
    if how == "padded":  # 30 features, then zeros up to 64
        rows = np.pad(cancer, ((0, 0), (0, 64 - cancer.shape[1])))
    else:  # the row, the next row and 4 features again: cut at 64 values
        rows = np.concatenate([cancer, np.roll(cancer, 1, axis=0), cancer[:, :4]], axis=1)[:, :64]
    assert np.all(autoencoder.errors(model, rows.astype(np.float32)) > metrics["threshold"])
    lo, hi = rows.min(axis=0), rows.max(axis=0)
    in_range = np.round(16 * (rows - lo) / np.where(hi > lo, hi - lo, 1)).astype(np.float32)  # as pixels would be
    share = float(np.mean(autoencoder.errors(model, in_range) > metrics["threshold"]))
    assert share > 0.8, f"only {share:.1%} of rescaled breast-cancer rows were flagged"


@pytest.mark.parametrize("shape", [(8, 8), (7, 5), (28, 28)])
def test_conv_autoencoder_gives_back_the_image_size(params, shape):
    """Odd sides too: each transposed convolution's output padding undoes the encoder's rounding."""
    novelty = params.novelty.model_copy(update={"arch": "conv", "channels": [4, 8, 8]})
    data = params.data.model_copy(update={"image_shape": list(shape)})
    n = shape[0] * shape[1]
    model = autoencoder.Autoencoder(autoencoder.AutoencoderConfig.of(novelty, data, n)).eval()
    rows = torch.rand(3, n)
    assert model.reconstruct(rows).shape == (3, n)
    assert model(rows).shape == (3, 1)


def test_conv_needs_images_and_dense_takes_tables(params):
    from pipeline.params import ParamsError, parse_params

    raw = params.model_dump(mode="json")
    raw["data"]["image_shape"] = None
    raw["train"]["model"]["arch"] = "mlp"
    raw["novelty"]["arch"] = "conv"
    with pytest.raises(ParamsError, match="novelty.arch 'conv' needs data.image_shape"):
        parse_params(raw)
    raw["novelty"]["arch"] = "dense"
    tabular = parse_params(raw)
    rows = np.random.default_rng(0).normal(size=(40, 30)).astype(np.float32)
    config = autoencoder.AutoencoderConfig.of(tabular.novelty, tabular.data, 30)
    assert autoencoder.Autoencoder(config)(torch.from_numpy(rows)).shape == (40, 1)


def test_conv_autoencoder_learns_digits_too(params):
    novelty = params.novelty.model_copy(update={"arch": "conv", "epochs": 10})
    table = digits_table()
    split = SplitTable.of(table, assignment(len(table)), params.data)
    model, metrics = novelty_stage.run(split, params.data, novelty)
    test = split.split_rows("test").float32()
    shuffled = np.stack([np.random.default_rng(2).permutation(row) for row in test])
    assert np.median(autoencoder.errors(model, shuffled)) > 2 * np.median(autoencoder.errors(model, test))
    assert metrics["threshold"] > 0


def test_file_round_trip_and_disabled_form(tmp_path, trained):
    model, metrics, test = trained
    autoencoder.save(tmp_path / "on.pt", model, threshold=metrics["threshold"], metrics=metrics)
    loaded, blob = autoencoder.load(tmp_path / "on.pt")
    assert loaded is not None and blob["threshold"] == metrics["threshold"]
    np.testing.assert_array_equal(autoencoder.errors(loaded, test), autoencoder.errors(model, test))
    novelty_format.write_disabled(tmp_path / "off.pt")
    assert autoencoder.load(tmp_path / "off.pt") == (None, {"format": autoencoder.FORMAT, "enabled": False})


def test_a_file_of_another_kind_is_refused(tmp_path):
    torch.save({"format": "something else"}, tmp_path / "x.pt")
    with pytest.raises(autoencoder.StageError, match="not a novelty file"):
        autoencoder.load(tmp_path / "x.pt")


def test_a_diverged_autoencoder_stops_the_stage_naming_the_lever(params):
    table = digits_table()
    split = SplitTable.of(table, assignment(len(table)), params.data)
    novelty = params.novelty.model_copy(update={"lr": 1e30, "epochs": 1})
    with pytest.raises(novelty_stage._cli.StageError, match="diverged.*lower novelty.lr"):
        novelty_stage.run(split, params.data, novelty)

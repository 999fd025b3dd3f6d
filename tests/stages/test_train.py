"""train: a tiny model learns, resumes exactly after a crash, repeats bit for bit, and refuses bad
params and unsafe or stale checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_training import raw_params, tiny_params

from pipeline.augment import augment_images
from pipeline.checkpoints import CHECKPOINT_FORMAT, read_checkpoint
from pipeline.models import config_for
from pipeline.optimizers import lr_factor
from pipeline.params import Params, ParamsError, parse_params
from pipeline.rows import Rows, SplitTable
from pipeline.training import fit
from stages import train
from stages.split import split_stratified

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def assignment(image_table, params):
    return split_stratified(image_table["label"].to_numpy(), params.split)


def run_train(table, assignment, params: Params, *args, **kwargs):
    result, config, _ = train.run(
        SplitTable.of(table, assignment, params.data), params.data, params.train, *args, **kwargs
    )
    return result, config


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_tiny_model_learns(image_table, assignment):
    history = []
    params = tiny_params(epochs=5, augment={"enabled": False, "max_shift": 0, "max_rotation": 0.0})
    result, config = run_train(image_table, assignment, params, on_epoch=lambda e, row: history.append(row))
    assert config.arch == "cnn" and len(history) == 5
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.metrics["val_accuracy"] >= max(0.5, history[0]["val_accuracy"])
    assert result.model(torch.zeros(2, 64)).shape == (2, 10)


@pytest.mark.parametrize("threads", [1, 2, 0])
def test_training_uses_train_cpu_threads_and_restores_the_callers(image_table, assignment, threads):
    """0 keeps torch's default (what the process had); the setting ends with the fit."""
    seen = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        run_train(
            image_table,
            assignment,
            tiny_params(epochs=1, cpu_threads=threads),
            on_epoch=lambda e, row: seen.append(torch.get_num_threads()),
        )
        assert seen == [threads or 3]
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_scale_comes_from_the_value_range(image_table, assignment):
    result, _ = run_train(image_table, assignment, tiny_params(epochs=1))
    assert torch.all(result.model.scale.offset == 0) and torch.allclose(result.model.scale.factor, torch.tensor(1 / 16))


def test_same_seed_gives_identical_weights(image_table, assignment):
    first, _ = run_train(image_table, assignment, tiny_params(epochs=2))
    again, _ = run_train(image_table, assignment, tiny_params(epochs=2))
    other, _ = run_train(image_table, assignment, tiny_params(epochs=2, seed=1))
    assert _states_equal(first.model.state_dict(), again.model.state_dict())
    assert not _states_equal(first.model.state_dict(), other.model.state_dict())


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_matches_an_uninterrupted_run(image_table, assignment, tmp_path):
    # Shifts and rotations on, so the augmentation's random stream must resume exactly too.
    params = tiny_params(epochs=4, augment={"enabled": True, "max_shift": 1, "max_rotation": 10.0})
    whole, _ = run_train(image_table, assignment, params, tmp_path / "whole.pt")

    def crash_after_second_epoch(epoch, row):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        run_train(image_table, assignment, params, tmp_path / "crashed.pt", crash_after_second_epoch)
    seen = []
    resumed, _ = run_train(image_table, assignment, params, tmp_path / "crashed.pt", lambda e, row: seen.append(e))

    assert resumed.resumed_from == 2 and seen == [0, 1, 2, 3]  # epochs 0-1 replayed for the log
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    assert _states_equal(resumed.model.state_dict(), whole.model.state_dict())
    last_whole = torch.load(tmp_path / "whole.pt", weights_only=True)
    last_resumed = torch.load(tmp_path / "crashed.pt", weights_only=True)
    assert _states_equal(last_whole["model"], last_resumed["model"])  # the last epoch's weights too


def test_checkpoints_by_time_skip_short_epochs_and_keep_the_last(image_table, assignment, tmp_path):
    # An hour between checkpoints: none is written mid-run, so a crash restarts from scratch (and
    # still ends with the same weights); the last epoch is always written.
    params = tiny_params(epochs=3, checkpoint_interval_s=3600.0)
    whole, _ = run_train(image_table, assignment, params)

    def crash_in_the_second_epoch(epoch, row):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        run_train(image_table, assignment, params, tmp_path / "ck.pt", crash_in_the_second_epoch)
    assert not (tmp_path / "ck.pt").exists()
    again, _ = run_train(image_table, assignment, params, tmp_path / "ck.pt")
    assert again.resumed_from == 0 and _states_equal(again.model.state_dict(), whole.model.state_dict())
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["epoch"] == 3


def test_a_stale_checkpoint_is_ignored(image_table, assignment, tmp_path, caplog):
    checkpoint = tmp_path / "ck.pt"
    run_train(image_table, assignment, tiny_params(epochs=1), checkpoint)
    result, _ = run_train(image_table, assignment, tiny_params(epochs=1, label_smoothing=0.2), checkpoint)
    assert result.resumed_from == 0 and "stale checkpoint" in caplog.text


def test_a_checkpoint_that_would_run_code_is_never_loaded(tmp_path, caplog):
    class RunsCode:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"format": CHECKPOINT_FORMAT, "x": RunsCode()}, tmp_path / "ck.pt")
    assert read_checkpoint(tmp_path / "ck.pt", "any") is None
    assert not (tmp_path / "pwned").exists() and "cannot be loaded safely" in caplog.text


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _missing_keys(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    for key in ("optimizer", "history", "rng"):
        del state[key]
    torch.save(state, path)


def _wrong_shapes(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["model"] = {name: torch.zeros(1) for name in state["model"]}
    torch.save(state, path)


@pytest.mark.parametrize(
    "damage",
    [lambda path: path.write_bytes(b""), _truncated, _missing_keys, _wrong_shapes],
    ids=["empty", "truncated", "missing-keys", "wrong-shapes"],
)
def test_a_corrupt_checkpoint_is_ignored_with_a_warning(image_table, assignment, tmp_path, caplog, damage):
    # A crash during a write or a truncated copy must not block every later run.
    checkpoint, params = tmp_path / "ck.pt", tiny_params(epochs=2)
    whole, _ = run_train(image_table, assignment, params, checkpoint)
    damage(checkpoint)
    again, _ = run_train(image_table, assignment, params, checkpoint)
    assert again.resumed_from == 0 and "ignoring checkpoint" in caplog.text
    assert _states_equal(again.model.state_dict(), whole.model.state_dict())
    assert read_checkpoint(checkpoint, torch.load(checkpoint, weights_only=True)["fingerprint"]) is not None


@pytest.mark.parametrize(
    "change,key",
    [
        (lambda t: t["optimizer"].update(lrr=0.1), "train.optimizer.lrr"),
        (lambda t: t.update(epochs="ten"), "train.epochs"),
        (lambda t: t["optimizer"].update(lr=-0.1), "train.optimizer.lr"),
        (lambda t: t["model"].update(dropout=1.5), "train.model.dropout"),
        (lambda t: t["schedule"].update(name="step"), "train.schedule.name"),
    ],
)
def test_bad_params_name_the_key(change, key):
    raw = raw_params()
    change(raw["train"])
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        parse_params(raw)


def test_the_old_onecycle_name_is_refused_naming_the_new_one():
    raw = raw_params()
    raw["train"]["schedule"]["name"] = "onecycle"
    with pytest.raises(ParamsError, match=r"train\.schedule\.name: .*renamed 'warmup_cosine'"):
        parse_params(raw)


def test_a_cnn_needs_an_image_shape():
    raw = raw_params()
    raw["data"]["image_shape"] = None
    with pytest.raises(ParamsError, match="image_shape"):
        parse_params(raw)


def test_mlp_trains_on_tabular_rows():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(120, 5)) * [1, 10, 100, 0, 1]).astype(np.float32)  # one constant feature
    y = (x[:, 0] + x[:, 1] / 10 > 0).astype(np.int64)
    raw = raw_params(epochs=3)
    raw["data"] |= {"image_shape": None, "value_range": None, "classes": [0, 1]}
    raw["train"]["model"]["arch"] = "mlp"
    params = parse_params(raw)
    config = config_for(params.train.model, params.data, 5)
    result = fit(config, Rows(x[:90], y[:90]), Rows(x[90:], y[90:]), params.train, params.data)
    assert torch.isfinite(result.model.scale.factor).all() and result.model.scale.factor[3] == 1.0
    assert result.metrics["val_accuracy"] > 0.7


def test_shifts_move_whole_pixels_and_fill_with_background():
    image = torch.arange(64, dtype=torch.float32).view(1, 64) + 1
    batch = image.repeat(32, 1)
    moved = augment_images(batch, [8, 8], 0.0, 1, 0.0, torch.Generator().manual_seed(0))
    grid = image.view(8, 8)
    candidates = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = torch.zeros(10, 10)
            shifted[1 + dy : 9 + dy, 1 + dx : 9 + dx] = grid
            candidates.append(shifted[1:9, 1:9].reshape(64))
    for row in moved:
        assert any(torch.allclose(row, c, atol=1e-4) for c in candidates)


def test_warmup_cosine_warms_up_then_decays_to_zero():
    factors = [lr_factor(s, 100, "warmup_cosine", 0.1) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and factors[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))


def test_cli_writes_model_metrics_and_plots(image_table, tmp_path):
    from pipeline.models import load_model
    from pipeline.tables import write_parquet

    raw = raw_params(epochs=2)
    raw["data"]["source"] = str(tmp_path / "unused.parquet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    write_parquet(image_table, tmp_path / "clean.parquet")
    write_parquet(
        split_stratified(image_table["label"].to_numpy(), parse_params(raw).split), tmp_path / "split.parquet"
    )
    args = ["--clean", "clean.parquet", "--split", "split.parquet", "--out", "model.pt"]
    args += ["--checkpoint", "ck.pt", "--live", "live", "--params", "params.yaml"]
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}
    subprocess.run([sys.executable, "-m", "stages.train", *args], cwd=tmp_path, env=env, check=True)

    model, blob = load_model(tmp_path / "model.pt")
    assert blob["params"]["epochs"] == 2 and 0 <= blob["metrics"]["val_accuracy"] <= 1
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary["step"] == 1 and "val_accuracy" in summary["best"]
    assert (tmp_path / "live" / "plots" / "metrics" / "val_accuracy.tsv").read_text().count("\n") == 3
    assert not (tmp_path / "live" / "dvc.yaml").exists()


def test_a_diverged_training_fails_naming_the_learning_rate(image_table, assignment, tmp_path):
    """A learning rate far too high makes the loss NaN: the stage fails at that epoch, naming the key
    to change, instead of finishing a model that answers one class (nor a checkpoint of the NaN weights)."""
    from pipeline.errors import StageError

    params = tiny_params(epochs=3, optimizer={**raw_params()["train"]["optimizer"], "lr": 1e6})
    with pytest.raises(StageError, match=r"diverged.*epoch 1.*train\.optimizer\.lr") as failed:
        run_train(image_table, assignment, params, tmp_path / "ckpt.pt")
    assert "1000000.0" in str(failed.value)
    assert not (tmp_path / "ckpt.pt").exists()

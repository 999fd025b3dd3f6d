"""train.privacy: DP-SGD spends the epsilon it was given, reports it (metrics, model file, model
card), resumes with the accountant's state, and refuses what it cannot train privately."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from opacus.accountants import RDPAccountant
from tiny_training import raw_params, tiny_params

from pipeline.errors import StageError
from pipeline.models import build_model, config_for, load_model
from pipeline.params import Params, ParamsError, PrivacyParams, parse_params
from pipeline.privacy import check_model, delta_for, private_config
from pipeline.rows import SplitTable
from pipeline.training import fit
from stages import train
from stages.split import split_stratified

ROOT = Path(__file__).resolve().parents[2]
EPSILON = 4.0


def run_train(table, assignment, params: Params, *args, **kwargs):
    return train.run(SplitTable.of(table, assignment, params.data), params.data, params.train, *args, **kwargs)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Crash(RuntimeError):
    pass


def private(**train_overrides):
    """Tiny params with DP-SGD on (no early stop: every epoch of the budget is spent)."""
    privacy = {"enabled": True, "target_epsilon": EPSILON, "delta": None, "max_grad_norm": 1.0}
    return tiny_params(privacy=privacy, **train_overrides)


@pytest.fixture
def assignment(image_table, params):
    return split_stratified(image_table["label"].to_numpy(), params.split)


def test_private_training_spends_the_target_epsilon_and_reports_it(image_table, assignment):
    params = private()  # the resume test's params: the noise search is done once per process
    result, config, _ = run_train(image_table, assignment, params)
    spent = result.privacy
    rows = int((assignment["split"] == "train").sum())
    # The noise was searched (to 0.01) so that all epochs spend the target; the accountant agrees.
    assert EPSILON - 0.05 <= spent["epsilon"] <= EPSILON
    assert spent["delta"] == pytest.approx(0.1 / rows) and spent["noise_multiplier"] > 0
    assert spent["steps"] == 4 * -(-rows // params.train.batch_size)
    reference = RDPAccountant()  # Opacus' own count of the same steps
    reference.history = [(spent["noise_multiplier"], spent["sample_rate"], spent["steps"])]
    assert spent["epsilon"] == pytest.approx(reference.get_epsilon(spent["delta"]), rel=1e-9)
    curve = [row["epsilon"] for row in result.history]
    assert curve == sorted(curve) and curve[-1] == spent["epsilon"]
    # The cnn's batch norm became group norm, in the model and in the config the file stores.
    assert config.norm == "group"
    layers = {type(m) for m in result.model.modules()}
    assert torch.nn.GroupNorm in layers and torch.nn.BatchNorm2d not in layers


def test_default_params_train_without_privacy(image_table, assignment):
    result, config, _ = run_train(image_table, assignment, tiny_params(epochs=1))
    assert result.privacy is None and config.norm == "batch"
    assert "epsilon" not in result.history[0]


def test_a_resumed_private_run_spends_what_an_uninterrupted_one_does(image_table, assignment, tmp_path):
    params = private()
    whole, _, _ = run_train(image_table, assignment, params, tmp_path / "whole.pt")

    def crash_after_second_epoch(epoch, row):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        run_train(image_table, assignment, params, tmp_path / "crashed.pt", crash_after_second_epoch)
    crashed = torch.load(tmp_path / "crashed.pt", weights_only=True)  # plain data only
    assert crashed["epoch"] == 2 and crashed["privacy"][0][2] == 2 * whole.privacy["steps"] // 4
    resumed, _, _ = run_train(image_table, assignment, params, tmp_path / "crashed.pt")

    assert resumed.resumed_from == 2
    assert resumed.privacy == whole.privacy  # the accountant went on from its saved history
    assert resumed.history == whole.history  # epsilon per epoch included
    assert states_equal(resumed.model.state_dict(), whole.model.state_dict())  # same batches and noise


def test_batch_norm_and_recurrent_layers_are_refused_by_name(image_table, assignment, params):
    table = SplitTable.of(image_table, assignment, params.data)
    parts = table.rows(train=table.splits == "train", val=table.splits == "val")
    train = private(epochs=1).train
    batch_norm = config_for(train.model, params.data, table.n_features)  # not passed through private_config
    with pytest.raises(StageError, match=r"BatchNorm.*group norm"):
        fit(batch_norm, parts["train"], parts["val"], train, params.data)
    gru = config_for(train.model.model_copy(update={"arch": "rnn"}), params.data, table.n_features)
    with pytest.raises(StageError, match=r"GRU.*mlp or transformer"):
        check_model(build_model(private_config(gru, train.privacy)))


def test_privacy_with_several_processes_is_refused():
    raw = raw_params(privacy={"enabled": True}, distributed={"nproc_per_node": 2, "nnodes": 1})
    with pytest.raises(ParamsError, match="privacy.enabled with distributed training"):
        parse_params(raw)


def test_a_delta_not_below_one_over_the_rows_is_refused():
    assert delta_for(PrivacyParams(enabled=True), 1000) == pytest.approx(1e-4)
    with pytest.raises(StageError, match=r"delta 0.01 is not below 1 / 1000 training rows"):
        delta_for(PrivacyParams(enabled=True, delta=0.01), 1000)


def test_epsilon_reaches_the_train_metrics_the_model_file_and_the_card(image_table, tmp_path, params):
    from pipeline.tables import write_parquet
    from stages import export

    raw = raw_params(epochs=2, privacy={"enabled": True, "target_epsilon": EPSILON})
    raw["data"]["source"] = str(tmp_path / "unused.parquet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    write_parquet(image_table, tmp_path / "clean.parquet")
    assignment = split_stratified(image_table["label"].to_numpy(), parse_params(raw).split)
    write_parquet(assignment, tmp_path / "split.parquet")
    args = ["--clean", "clean.parquet", "--split", "split.parquet", "--out", "model.pt"]
    args += ["--checkpoint", "ck.pt", "--live", "live", "--params", "params.yaml"]
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}
    subprocess.run([sys.executable, "-m", "stages.train", *args], cwd=tmp_path, env=env, check=True)

    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    epsilon = summary["privacy"]["epsilon"]
    assert EPSILON - 0.05 <= epsilon <= EPSILON and summary["privacy"]["delta"] > 0
    model, blob = load_model(tmp_path / "model.pt")  # rebuilt with group norm from the stored config
    assert blob["privacy"]["epsilon"] == epsilon and blob["config"].norm == "group"

    test = SplitTable.of(image_table, assignment, params.data).split_rows("test")
    hashes = {name: {"path": f"data/{name}.parquet", "md5": "0" * 32} for name in ("clean", "split")}
    (tmp_path / "candidate").mkdir()
    card = export.run(model, blob, test, params.data, params.export, tmp_path / "candidate", hashes).to_json()
    assert card["privacy"]["epsilon"] == epsilon
    assert json.loads((tmp_path / "candidate" / "model_card.json").read_text())["privacy"] == card["privacy"]


def test_crossval_trains_its_folds_privately_too(image_table, assignment):
    from stages import crossval

    params = private(epochs=1)
    table = SplitTable.of(image_table, assignment, params.data)
    # It would stop at the cnn's batch norm if crossval did not train the private config.
    metrics = crossval.run(table, params.data, params.train, params.split, fold=0)
    assert metrics["fold"] == 0 and 0 <= metrics["accuracy"] <= 1

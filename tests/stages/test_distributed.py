"""Data-parallel training: the stage re-executes itself under torchrun when params ask for more
than one process; two gloo processes on CPU learn as well as one, and a crash resumes to the same
weights bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_image_table

from pipeline import distributed
from pipeline.compute import device_tensors
from pipeline.errors import StageError
from pipeline.models import load_model
from pipeline.params import DistributedParams, parse_params
from pipeline.rows import SplitTable
from pipeline.tables import write_parquet
from pipeline.training import evaluate
from stages.split import split_stratified

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
ENV = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}


def test_one_process_trains_without_torchrun():
    assert distributed.torchrun_command(DistributedParams(), "stages.train", ["--out", "m.pt"], {}) is None


def test_several_processes_rerun_the_stage_under_torchrun():
    cmd = distributed.torchrun_command(DistributedParams(nproc_per_node=4), "stages.train", ["--out", "m.pt"], {})
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in cmd and "--nnodes=1" in cmd and "--standalone" in cmd
    assert cmd[-4:] == ["-m", "stages.train", "--out", "m.pt"]


def test_inside_torchrun_the_stage_does_not_relaunch():
    env = {"LOCAL_RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}
    assert distributed.torchrun_command(DistributedParams(nproc_per_node=2), "stages.train", [], env) is None


def test_several_hosts_take_the_rendezvous_from_the_environment():
    params = DistributedParams(nproc_per_node=8, nnodes=2)
    with pytest.raises(StageError, match="TRAIN_RDZV_ENDPOINT=<host>:<port>"):
        distributed.torchrun_command(params, "stages.crossval", [], {})
    cmd = distributed.torchrun_command(params, "stages.crossval", [], {"TRAIN_RDZV_ENDPOINT": "node0:29400"})
    assert "--rdzv-endpoint=node0:29400" in cmd and "--rdzv-backend=c10d" in cmd and "--nnodes=2" in cmd
    assert "--standalone" not in cmd and "--rdzv-id=stages.crossval" in cmd


def test_distributed_params_are_strict():
    raw = {"data": {"source": "x", "label": "label", "classes": [0, 1]}}
    with pytest.raises(StageError, match=r"train\.distributed\.nproc_per_node"):
        parse_params(raw | {"train": {"model": {"arch": "mlp"}, "distributed": {"nproc_per_node": 0}}})
    with pytest.raises(StageError, match=r"train\.distributed\.master_addr: unknown key"):
        parse_params(raw | {"train": {"model": {"arch": "mlp"}, "distributed": {"master_addr": "h"}}})


def _train_cli(folder: Path, nproc: int) -> float:
    """Run the train stage's CLI as DVC does, with `nproc` processes; the test accuracy of its model."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["source"] = "unused.parquet"
    raw["train"] |= {"device": "cpu", "distributed": {"nproc_per_node": nproc, "nnodes": 1}}
    raw["split"]["test_fraction"] = 0.3  # 522 test rows: 1 point is ~5 rows, more than run-to-run noise
    folder.mkdir()
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    table = tiny_image_table(rows_per_class=174)  # nearly all 1,797 digits (the rarest class has 174)
    assignment = split_stratified(table["label"].to_numpy(), parse_params(raw).split)
    write_parquet(table, folder / "clean.parquet")
    write_parquet(assignment, folder / "split.parquet")
    args = ["--clean", "clean.parquet", "--split", "split.parquet", "--out", "model.pt"]
    args += ["--checkpoint", "ck.pt", "--live", "live", "--params", "params.yaml"]
    done = subprocess.run(
        [sys.executable, "-m", "stages.train", *args], cwd=folder, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if nproc > 1:
        assert "running under torchrun" in done.stderr and "process 1 of 2 (gloo)" in done.stderr
    model, _ = load_model(folder / "model.pt")
    params = parse_params(raw)
    test = SplitTable.of(table, assignment, params.data).split_rows("test")
    return evaluate(model, *device_tensors(test), 10)["accuracy"]


@pytest.mark.distributed
def test_two_gloo_processes_learn_as_well_as_one(tmp_path):
    one, two = _train_cli(tmp_path / "one", 1), _train_cli(tmp_path / "two", 2)
    assert two == pytest.approx(one, abs=0.01) and one > 0.9
    summary = json.loads((tmp_path / "two" / "live" / "metrics.json").read_text())
    assert summary["step"] >= 1 and (tmp_path / "two" / "ck.pt").exists()


def _fit_under_torchrun(
    folder: Path, checkpoint: str, out: str, crash_after: int | None = None, nproc: int | None = 2
) -> int:
    """tests/stages/ddp_fit.py under torchrun with `nproc` processes (None: plain python)."""
    train = {"epochs": 4, "batch_size": 16, "device": "cpu", "label_smoothing": 0.05, "checkpoint_interval_s": 0.0}
    train |= {"model": {"arch": "cnn", "channels": [8], "hidden": [32], "dropout": 0.1}}
    train |= {"augment": {"enabled": True, "max_shift": 1, "max_rotation": 10.0}}  # its random stream resumes too
    launcher = [sys.executable] if nproc is None else [*TORCHRUN, f"--nproc-per-node={nproc}"]
    cmd = [*launcher, str(ROOT / "tests" / "stages" / "ddp_fit.py"), "--train", json.dumps(train)]
    cmd += ["--checkpoint", checkpoint, "--out", out]
    if crash_after is not None:
        cmd += ["--crash-after", str(crash_after)]
    return subprocess.run(cmd, cwd=folder, env=ENV, capture_output=True, text=True).returncode


@pytest.mark.distributed
def test_a_crash_under_ddp_resumes_to_bit_identical_weights(tmp_path):
    assert _fit_under_torchrun(tmp_path, "whole.pt", "whole.out") == 0
    assert _fit_under_torchrun(tmp_path, "ck.pt", "crashed.out", crash_after=1) != 0  # rank 0 died mid-run
    assert not (tmp_path / "crashed.out").exists()
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["epoch"] == 2
    assert _fit_under_torchrun(tmp_path, "ck.pt", "resumed.out") == 0

    whole = torch.load(tmp_path / "whole.out", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.out", weights_only=True)
    assert whole["world"] == resumed["world"] == 2 and resumed["resumed_from"] == 2
    assert resumed["history"] == whole["history"]
    assert whole["state"].keys() == resumed["state"].keys()
    assert all(torch.equal(whole["state"][k], resumed["state"][k]) for k in whole["state"])


@pytest.mark.distributed
def test_one_process_under_torchrun_trains_exactly_like_plain_training(tmp_path):
    """The DDP wrapper, the process group and the gathered metrics change nothing with one process."""
    assert _fit_under_torchrun(tmp_path, "plain.pt", "plain.out", nproc=None) == 0
    assert _fit_under_torchrun(tmp_path, "ddp.pt", "ddp.out", nproc=1) == 0
    plain = torch.load(tmp_path / "plain.out", weights_only=True)
    ddp = torch.load(tmp_path / "ddp.out", weights_only=True)
    assert (plain["world"], ddp["world"]) == (1, 1) and plain["history"] == ddp["history"]
    assert all(torch.equal(plain["state"][k], ddp["state"][k]) for k in plain["state"])

"""`plan` and `best` on a real Optuna RDB study (SQLite through SQLAlchemy 2, as Airflow pins it):
no trial is trained here, trials are told results directly."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy
from optuna.trial import TrialState

from orchestration.sweep import study as studies
from orchestration.sweep.params import SweepParams
from orchestration.sweep.winner import SweepFailed, best, write_winner

SPACE = {
    "train.optimizer.lr": {"low": 0.0003, "high": 0.01, "log": True},
    "train.model.channels": {"choices": [[16, 32], [32, 64]]},
}


def sweep(**changes) -> SweepParams:
    return SweepParams.model_validate({"trials": 4, "space": SPACE, **changes})


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_storage_is_sqlalchemy_2() -> None:
    assert int(sqlalchemy.__version__.split(".")[0]) == 2


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_plan_asks_trials_then_nothing_once_all_finished(url: str, sampler: str) -> None:
    s = sweep(sampler=sampler)
    specs = studies.plan(s, url, "data-1")
    assert [spec["number"] for spec in specs] == [0, 1, 2, 3]
    assert len({spec["study"] for spec in specs}) == 1
    for spec in specs:
        assert 0.0003 <= spec["params"]["train.optimizer.lr"] <= 0.01
        assert spec["params"]["train.model.channels"] in ([16, 32], [32, 64])  # decoded, not JSON text
    assert len({spec["params"]["train.optimizer.lr"] for spec in specs}) == 4

    study = studies.open_study(s, url, specs[0]["study"])
    study.tell(0, 0.9)
    study.tell(1, state=TrialState.PRUNED)
    study.tell(2, state=TrialState.FAIL)
    study.tell(3, 0.95)
    assert studies.plan(s, url, "data-1") == []  # a rerun retrains nothing finished
    assert best(s, url, specs[0]["study"]) == {"number": 3, "params": specs[3]["params"], "value": 0.95}


def test_a_trial_left_running_is_failed_and_run_again_with_its_values(url: str) -> None:
    s = sweep()
    first = studies.plan(s, url, "data-1")
    study = studies.open_study(s, url, first[0]["study"])
    for spec in first[:3]:
        study.tell(spec["number"], 0.5)
    # trial 3 was asked and never told: exactly what a worker that died leaves behind
    second = studies.plan(s, url, "data-1")
    assert len(second) == 1 and second[0]["number"] == 4 and second[0]["params"] == first[3]["params"]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[3] == TrialState.FAIL and states[4] == TrialState.RUNNING
    study.tell(4, 0.6)
    assert studies.plan(s, url, "data-1") == []  # the retry took the dead trial's place among the 4


def test_other_data_or_space_is_another_study(url: str) -> None:
    s = sweep()
    one = studies.plan(s, url, "data-1")
    other_data = studies.plan(s, url, "data-2")
    assert len(other_data) == 4 and other_data[0]["study"] != one[0]["study"]
    narrower = sweep(space={"train.optimizer.lr": {"low": 0.001, "high": 0.01, "log": True}})
    assert studies.study_name(narrower, "data-1") != one[0]["study"]
    assert studies.study_name(sweep(trials=8, parallel=1), "data-1") == one[0]["study"]  # more trials: same study


def test_grid_runs_each_point_once_and_at_most_the_grid(url: str) -> None:
    s = SweepParams.model_validate(
        {
            "sampler": "grid",
            "trials": 10,
            "space": {
                "train.epochs": {"low": 4, "high": 8, "step": 4},
                "train.model.channels": SPACE["train.model.channels"],
            },
        }
    )
    specs = studies.plan(s, url, "data-1")
    points = sorted((spec["params"]["train.epochs"], tuple(spec["params"]["train.model.channels"])) for spec in specs)
    assert points == [(4, (16, 32)), (4, (32, 64)), (8, (16, 32)), (8, (32, 64))]
    study = studies.open_study(s, url, specs[0]["study"])
    for spec in specs:
        study.tell(spec["number"], 0.5)  # the last point's tell must not need Optuna's optimize loop
    assert studies.plan(s, url, "data-1") == []


def test_minimize_picks_the_lowest(url: str) -> None:
    s = sweep(objective={"metric": "best/val_loss", "direction": "minimize"}, pruner={"metric": "val_loss"})
    specs = studies.plan(s, url, "data-1")
    study = studies.open_study(s, url, specs[0]["study"])
    for spec, value in zip(specs, [0.4, 0.2, 0.3, 0.25], strict=True):
        study.tell(spec["number"], value)
    assert best(s, url, specs[0]["study"])["number"] == 1


def test_sweep_fails_only_when_every_trial_does(url: str) -> None:
    s = sweep(trials=2)
    specs = studies.plan(s, url, "data-1")
    study = studies.open_study(s, url, specs[0]["study"])
    study.tell(0, state=TrialState.PRUNED)
    study.tell(1, state=TrialState.FAIL)
    with pytest.raises(SweepFailed) as failed:
        best(s, url, specs[0]["study"])
    assert specs[0]["study"] in str(failed.value) and "t0 pruned, t1 fail" in str(failed.value)


def test_pruner_metric_must_agree_with_the_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        sweep(objective={"metric": "best/val_loss", "direction": "minimize"})  # pruner judges val_accuracy


def test_write_winner_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    original = (Path(__file__).resolve().parents[2] / "params.yaml").read_text()
    path.write_text(original)
    write_winner(path, {"train.optimizer.lr": 0.0042, "train.model.channels": [16, 32]})
    text = path.read_text()
    assert "    lr: 0.0042              # peak learning rate\n" in text
    assert "    channels: [16, 32]      # cnn: output channels" in text
    assert text.count("#") == original.count("#")


def test_the_study_key_follows_the_data_and_the_unswept_train_params_only():
    """Writing the winner into params.yaml keeps the study (its swept values do not count); more
    epochs or other data start a new one (a trial's result depends on them)."""
    from orchestration.sweep.study import key_of

    swept = ["train.optimizer.lr"]
    base = key_of({"data/split.parquet": "a1"}, {"epochs": 4, "optimizer": {"lr": 0.1}}, swept)
    assert base == key_of({"data/split.parquet": "a1"}, {"epochs": 4, "optimizer": {"lr": 0.5}}, swept)
    assert base != key_of({"data/split.parquet": "a1"}, {"epochs": 8, "optimizer": {"lr": 0.1}}, swept)
    assert base != key_of({"data/split.parquet": "b2"}, {"epochs": 4, "optimizer": {"lr": 0.1}}, swept)

"""The tuning rule on synthetic measurements (serving/tuning.py), and the config it writes.

No server here: the cells are what serving/loadgen.py `alternate` returns, made up so that the
noise is known. The real-server tests are in tests/stages/test_tune.py."""

from __future__ import annotations

import pytest
from tritonclient.grpc.model_config_pb2 import ModelConfig

from pipeline.params import ExportParams, TuneParams
from serving import configs
from serving.repository import parse_config
from serving.tuning import (
    BASELINE,
    TuneError,
    apply_setting,
    choose,
    current_setting,
    grid,
    paired_ratio,
    summarise,
)

BASE = {"instance_count": 1, "max_batch_size": 64, "max_queue_delay_microseconds": 20000, "intra_op_threads": 1}
FAST = {**BASE, "max_queue_delay_microseconds": 0}


def cell(rows_per_s: float, p99_ms: float, errors: int = 0) -> dict:
    return {"rows_per_s": rows_per_s, "p99_ms": p99_ms, "errors": errors}


def cells_of(per_round: dict[str, list[tuple[float, float]]], concurrency: int = 1) -> dict:
    """{name: [(rows/s, p99) per round]} at one concurrency."""
    return {name: {concurrency: [cell(r, p) for r, p in rounds]} for name, rounds in per_round.items()}


def test_a_faster_setting_within_the_budget_replaces_the_baseline():
    # Round 2 is a burst of load on the machine: both sides slow down 3x; the paired ratio stays 4x.
    cells = cells_of({BASELINE: [(50, 21), (17, 60), (50, 22)], "fast": [(200, 2), (66, 6), (210, 2)]})
    summaries = summarise(cells, {BASELINE: BASE, "fast": FAST}, BASELINE, budget_ms=50.0)
    choice = choose(summaries, BASELINE, margin=0.1)
    assert choice.name == "fast" and choice.setting == FAST
    assert summaries[1].ratio == pytest.approx(4.0, rel=0.05)
    assert "4." in choice.reason


def test_within_the_margin_the_baseline_stays():
    cells = cells_of({BASELINE: [(100, 5), (100, 5), (100, 5)], "other": [(108, 5), (95, 5), (109, 5)]})
    choice = choose(summarise(cells, {BASELINE: BASE, "other": FAST}, BASELINE, 50.0), BASELINE, margin=0.1)
    assert choice.name == BASELINE
    assert "tune.margin" in choice.reason


def test_one_lucky_round_does_not_win():
    """A setting that was faster in one round only (noise) loses on the median of paired rounds."""
    cells = cells_of({BASELINE: [(100, 5), (100, 5), (100, 5)], "lucky": [(300, 5), (90, 5), (95, 5)]})
    choice = choose(summarise(cells, {BASELINE: BASE, "lucky": FAST}, BASELINE, 50.0), BASELINE, margin=0.1)
    assert choice.name == BASELINE


def test_a_faster_setting_over_the_p99_budget_is_not_chosen():
    cells = cells_of({BASELINE: [(100, 5)] * 3, "greedy": [(400, 80), (400, 30), (400, 90)]})
    summaries = summarise(cells, {BASELINE: BASE, "greedy": FAST}, BASELINE, 50.0)
    assert [s.within_budget for s in summaries] == [True, False]
    assert choose(summaries, BASELINE, margin=0.1).name == BASELINE


def test_a_baseline_over_the_budget_gives_way_to_any_setting_within_it():
    cells = cells_of({BASELINE: [(100, 90)] * 3, "slower": [(95, 10)] * 3})
    choice = choose(summarise(cells, {BASELINE: BASE, "slower": FAST}, BASELINE, 50.0), BASELINE, margin=0.1)
    assert choice.name == "slower"
    assert "over the p99 budget" in choice.reason


def test_a_setting_that_failed_requests_is_not_chosen():
    cells = {
        BASELINE: {1: [cell(100, 5)] * 3},
        "broken": {1: [cell(500, 1, errors=3), cell(500, 1), cell(500, 1)]},
    }
    summaries = summarise(cells, {BASELINE: BASE, "broken": FAST}, BASELINE, 50.0)
    assert choose(summaries, BASELINE, margin=0.1).name == BASELINE


def test_nothing_within_the_budget_keeps_the_baseline():
    cells = cells_of({BASELINE: [(100, 90)] * 3, "other": [(200, 80)] * 3})
    choice = choose(summarise(cells, {BASELINE: BASE, "other": FAST}, BASELINE, 50.0), BASELINE, margin=0.1)
    assert choice.name == BASELINE and "no setting" in choice.reason


def test_the_ratio_is_a_geometric_mean_over_concurrencies():
    cells = {
        BASELINE: {1: [cell(100, 5)], 8: [cell(400, 10)]},
        "x": {1: [cell(200, 5)], 8: [cell(800 * 4, 10)]},  # 2x at c=1, 8x at c=8: 4x overall
    }
    assert paired_ratio(cells, "x", BASELINE) == pytest.approx(4.0)


def test_the_grid_is_the_baseline_and_every_combination_once():
    tune = TuneParams(grid={"instance_count": [1, 2], "max_queue_delay_microseconds": [0, 20000]})
    settings = grid(BASE, tune)
    assert settings[0] == BASE
    assert len(settings) == 4  # (1, 0), (1, 20000) = BASE, (2, 0), (2, 20000)
    assert {(s["instance_count"], s["max_queue_delay_microseconds"]) for s in settings} == {
        (1, 0),
        (1, 20000),
        (2, 0),
        (2, 20000),
    }


def test_a_grid_larger_than_max_settings_is_refused_with_what_to_change():
    tune = TuneParams(grid={"instance_count": [1, 2, 3], "max_batch_size": [1, 8, 64]}, max_settings=4)
    with pytest.raises(TuneError, match=r"9 settings.*tune.max_settings 4"):
        grid(BASE, tune)


def test_unknown_grid_key_is_a_params_error():
    with pytest.raises(ValueError, match="extra"):
        TuneParams.model_validate({"grid": {"instances": [1]}})


def test_apply_setting_changes_only_the_tuned_keys():
    export = ExportParams(max_queue_delay_microseconds=20000, max_batch_size=64, preferred_batch_sizes=[32, 64])
    config = parse_config(configs.python_backend_config(export, configs.Signature(64, 10)))
    assert current_setting(config) == BASE
    tuned = apply_setting(config, {**FAST, "max_batch_size": 16, "instance_count": 2, "intra_op_threads": 2})
    assert current_setting(tuned) == {
        "instance_count": 2,
        "max_batch_size": 16,
        "max_queue_delay_microseconds": 0,
        "intra_op_threads": 2,
    }
    assert list(tuned.dynamic_batching.preferred_batch_size) == []  # 32 and 64 exceed 16: Triton would refuse
    assert [i.name for i in tuned.input] == [i.name for i in config.input]
    assert current_setting(config) == BASE  # the original is untouched
    configs.check_config(configs.render(tuned))


def test_a_queue_delay_without_a_dynamic_batcher_is_refused():
    config = ModelConfig(name="m", backend="python", max_batch_size=8)
    config.instance_group.add(count=1)
    with pytest.raises(TuneError, match="dynamic_batching"):
        apply_setting(config, {**BASE, "max_batch_size": 8})


def test_requests_carry_the_golden_rows_as_a_client_sends_them():
    from pipeline.candidate import GoldenSamples
    from serving.speed import BATCHES, request_batches

    rows = GoldenSamples(model_name="m", inputs=[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], outputs=[[1.0]] * 3, atol=1e-4)
    batches = request_batches(rows, 4)
    assert len(batches) == BATCHES and batches[0].shape == (4, 2) and batches[0].dtype.name == "float32"
    assert batches[0][:, 0].tolist() == [1.0, 3.0, 5.0, 1.0]  # fewer golden rows than asked: they repeat
    mixed = GoldenSamples(
        model_name="m",
        inputs={"age": [[30.0], [40.0]], "city": [["a"], ["b"]]},
        input_datatypes={"age": "FP32", "city": "BYTES"},
        outputs=[[1.0]] * 2,
        atol=1e-4,
    )
    first = request_batches(mixed, 3)[0]
    assert first["age"].shape == (3, 1) and first["city"].dtype == object

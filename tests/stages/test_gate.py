"""The gate: its decision rule, and the champion it scores live (a real Triton)."""

from __future__ import annotations

import numpy as np
import pytest
from support import ROOT, local_triton

from devtools.toy import build_candidate
from orchestration.params import load_project_params
from pipeline.rows import Rows
from serving.params import ServingParams
from serving.settings import ServingSettings
from stages import _cli
from stages.gate import GateParams, decide, diff_markdown, score_champion

PARAMS = GateParams(floors={"accuracy": 0.9, "f1_macro": 0.9}, max_regression={"accuracy": 0.01})
GOOD = {"accuracy": 0.97, "f1_macro": 0.96, "test_rows": 270}


def test_first_deployment_passes_on_floors_alone() -> None:
    decision = decide(GOOD, None, PARAMS)
    assert decision.passed and "first deployment" in decision.reason
    assert [c.champion for c in decision.checks] == [None, None]


def test_below_a_floor_is_rejected_with_the_metric_named() -> None:
    decision = decide({**GOOD, "f1_macro": 0.5}, None, PARAMS)
    assert not decision.passed
    assert "f1_macro 0.5000 is below the floor 0.9000" in decision.reason


def test_regression_beyond_the_allowance_is_rejected() -> None:
    decision = decide({**GOOD, "accuracy": 0.95}, {**GOOD, "accuracy": 0.98}, PARAMS)
    assert not decision.passed
    assert "0.0300 below the champion's 0.9800" in decision.reason
    # f1_macro has a floor but no regression limit: only its floor applies
    assert [c.passed for c in decision.checks] == [False, True]


def test_small_regression_within_the_allowance_passes() -> None:
    decision = decide({**GOOD, "accuracy": 0.975}, {**GOOD, "accuracy": 0.98}, PARAMS)
    assert decision.passed and "champion" in decision.reason
    assert decision.checks[0].delta == pytest.approx(-0.005)


def test_a_metric_evaluate_does_not_report_is_an_error() -> None:
    with pytest.raises(_cli.StageError, match="macro_f1"):
        decide(GOOD, None, GateParams(floors={"macro_f1": 0.9}, max_regression={}))


def test_diff_table_shows_both_sides() -> None:
    text = diff_markdown(decide(GOOD, {**GOOD, "accuracy": 0.96}, PARAMS))
    assert "| accuracy | 0.9700 | 0.9600 | +0.0100 | 0.9000 | 0.0100 | yes |" in text


PRIVATE = {"epsilon": 2.97, "delta": 1e-4, "noise_multiplier": 1.1}


def test_without_max_epsilon_privacy_is_not_required() -> None:
    assert decide(GOOD, None, PARAMS).passed and decide(GOOD, None, PARAMS, PRIVATE).passed


def test_max_epsilon_rejects_a_candidate_trained_without_privacy() -> None:
    strict = PARAMS.model_copy(update={"max_epsilon": 3.0})
    decision = decide(GOOD, {**GOOD}, strict)
    assert not decision.passed and all(c.passed for c in decision.checks)  # the metrics alone would pass
    assert "trained without differential privacy, but gate.max_epsilon is 3" in decision.reason
    assert "gate.max_epsilon: null" in decision.reason  # and what to do


def test_max_epsilon_rejects_a_larger_epsilon_and_passes_a_smaller_one() -> None:
    loose = {**PRIVATE, "epsilon": 7.9}
    rejected = decide(GOOD, None, PARAMS.model_copy(update={"max_epsilon": 3.0}), loose)
    assert not rejected.passed and "spent epsilon 7.900, above gate.max_epsilon 3" in rejected.reason
    passed = decide(GOOD, None, PARAMS.model_copy(update={"max_epsilon": 3.0}), PRIVATE)
    assert passed.passed and passed.to_json()["privacy"]["epsilon"] == 2.97
    assert "epsilon 2.970 spent at delta 0.0001" in diff_markdown(passed)


# --- the champion, scored live on a real Triton ---------------------------------------------------


CLASSES = list(range(10))  # the toy candidates' classes


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    with local_triton(tmp_path_factory.mktemp("gate-triton")) as server:
        yield server


@pytest.fixture(scope="module")
def params(triton):
    serving = ServingParams(
        repository=str(triton.repository),
        state_dir=str(triton.state_dir),  # where the local server keeps its model-control key
        http_port=triton.http_port,
        grpc_port=triton.grpc_port,
        metrics_port=triton.metrics_port,
        retries=1,
        backoff_s=0.1,
    )
    return load_project_params(ROOT / "params.yaml").model_copy(update={"serving": serving})


def rows_and_labels(candidate, count: int = 20) -> Rows:
    """Test rows and the labels the candidate's own model gives them (its accuracy is 1.0)."""
    import onnxruntime as ort

    features = np.random.default_rng(7).uniform(0, 16, (count, 64)).astype(np.float32)
    session = ort.InferenceSession(str(candidate / "model.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": features})
    return Rows(features, probabilities.argmax(axis=1))


def push(params, candidate):
    from serving.push import push_candidate
    from serving.settings import ServingSettings

    return push_candidate(candidate, ServingSettings.from_params(params.serving, env={}))


@pytest.mark.triton
def test_nothing_pinned_and_nothing_served_is_a_first_deployment(params):
    assert (
        score_champion(
            ServingSettings.from_params(params.serving),
            CLASSES,
            "never_pushed",
            Rows(np.zeros((2, 64)), np.zeros(2, np.int64)),
        )
        is None
    )


@pytest.mark.triton
def test_a_pinned_champion_that_is_not_ready_fails_closed(params, tmp_path):
    from serving.client import TritonClient
    from serving.settings import ServingSettings

    champion = build_candidate(tmp_path / "a", name="gone", seed=1)
    push(params, champion)
    with TritonClient(ServingSettings.from_params(params.serving, env={}).client) as client:
        client.unload("gone")  # as after a server restart that did not restore the pinned version

    with pytest.raises(_cli.StageError, match="version 1 .pinned in .* is not READY"):
        score_champion(ServingSettings.from_params(params.serving), CLASSES, "gone", rows_and_labels(champion))


@pytest.mark.triton
def test_the_champion_is_the_pinned_version_not_the_newest_ready_one(params, tmp_path):
    from serving.client import TritonClient
    from serving.push import rollback
    from serving.repository import TritonRepository, config_json, pin_versions
    from serving.settings import ServingSettings

    first = build_candidate(tmp_path / "a", name="pinned", seed=2)
    push(params, first)
    push(params, build_candidate(tmp_path / "b", name="pinned", seed=3))
    settings = ServingSettings.from_params(params.serving, env={})
    rollback("pinned", settings)  # pinned: 1
    repo = TritonRepository(settings.repository)
    with TritonClient(settings.client) as client:  # 2 loaded beside it, as a cut-off push leaves it
        client.load("pinned", config_json(pin_versions(repo.version_config("pinned", 2), [1, 2])))

    version, metrics = score_champion(
        ServingSettings.from_params(params.serving), CLASSES, "pinned", rows_and_labels(first)
    )

    assert version == 1 and metrics["accuracy"] == 1.0


@pytest.mark.triton
def test_the_champion_is_scored_with_its_own_max_batch_size(params, tmp_path):
    small = build_candidate(tmp_path / "a", name="small_batches", seed=4, max_batch_size=4)
    push(params, small)
    assert params.export.max_batch_size > 4  # the candidate's would be too big for the champion

    version, metrics = score_champion(
        ServingSettings.from_params(params.serving), CLASSES, "small_batches", rows_and_labels(small, count=21)
    )

    assert version == 1 and metrics["accuracy"] == 1.0

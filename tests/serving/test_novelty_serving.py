"""The served model's second output on a real Triton: push (its golden smoke test covers both
outputs), then the live answers against PyTorch and onnxruntime for every test row."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from novelty_support import export_with_novelty

from serving.client import TritonClient
from serving.errors import PushError
from serving.loading import smoke_test
from serving.push import push_candidate
from serving.repository import load_candidate


@pytest.fixture(scope="module")
def candidate(tmp_path_factory, params):
    out = tmp_path_factory.mktemp("novelty") / "candidate"
    export_params = params.export.model_copy(update={"model_name": "digits_novelty"})
    _, rows, (model, ae, threshold) = export_with_novelty(out, params, export_params)
    x = rows["test"].float32()
    with torch.no_grad():
        expected = (
            torch.softmax(model(torch.from_numpy(x)), dim=1).numpy(),
            (ae(torch.from_numpy(x)) / threshold).numpy(),
        )
    return out, x, expected


@pytest.mark.triton
def test_triton_serves_probabilities_and_novelty_like_torch_and_onnx(serving_settings, candidate, params):
    out, x, (probabilities, novelty) = candidate
    result = push_candidate(out, serving_settings)
    assert result.status == "pushed" and result.max_abs_diff is not None
    onnx_p, onnx_n = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )
    batch = params.export.max_batch_size  # the most rows one request may carry
    with TritonClient(serving_settings.client) as client:

        def served(output: str) -> np.ndarray:
            chunks = [x[i : i + batch] for i in range(0, len(x), batch)]
            return np.concatenate([client.infer("digits_novelty", c, output_name=output) for c in chunks])

        live_p, live_n = served("probabilities"), served("novelty")
        # A client that asks only for the probabilities (the gate, `serving sample`) gets them as before.
        assert np.array_equal(client.predict("digits_novelty", x[:batch]), live_p[:batch])
    tolerance = params.export.parity_tolerance
    assert live_n.shape == (len(x), 1)
    for served_p, served_n in ((live_p, live_n), (onnx_p, onnx_n)):
        np.testing.assert_allclose(served_p, probabilities, atol=tolerance)
        np.testing.assert_allclose(served_n, novelty, atol=tolerance)


@pytest.mark.triton
def test_smoke_test_checks_the_golden_novelty_too(serving_settings, candidate):
    """golden.json's novelty values are checked as well as its probabilities: off by more than
    atol there alone, and the smoke test fails, naming the output."""
    out, _, _ = candidate
    served = push_candidate(out, serving_settings)  # pushed, or unchanged if the test above ran first
    golden = load_candidate(out).golden
    assert list(golden.more_outputs or {}) == ["novelty"]
    with TritonClient(serving_settings.client) as client:
        assert smoke_test(client, "digits_novelty", served.version, golden) <= golden.atol
        shifted = (np.asarray((golden.more_outputs or {})["novelty"]) + 0.5).tolist()
        wrong = golden.model_copy(update={"more_outputs": {"novelty": shifted}})
        with pytest.raises(PushError, match="golden novelty outputs by 0.5"):
            smoke_test(client, "digits_novelty", served.version, wrong)


def test_torchscript_entry_maps_novelty_to_its_positional_name(candidate):
    out, _, _ = candidate
    golden = load_candidate(out, "gpu_torchscript").golden
    assert (golden.output_name, list(golden.more_outputs or {})) == ("output__0", ["output__1"])

"""Live counters per model version from Triton's Prometheus endpoint, as `serving status` shows them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.params import ExportParams
from serving import configs
from serving.cli import format_status
from serving.client import ClientError, ClientSettings, TritonClient
from serving.metrics import MetricsUnavailable, VersionCounters, live_counters, parse
from serving.status import ModelStatus, Status, VersionStatus

# What Triton 2.51's metrics endpoint printed for a version after 7 requests (21 rows).
EXPOSITION = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m",version="1"} 7
nv_inference_request_success{model="other",version="3"} 0
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="m",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="m",reason="BACKEND",version="1"} 2
nv_inference_request_failure{model="m",reason="CANCELED",version="1"} 0
nv_inference_request_failure{model="m",reason="REJECTED",version="1"} 1
# TYPE nv_inference_count counter
nv_inference_count{model="m",version="1"} 21
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="m",version="1"} 7
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="m",version="1"} 154849
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="m",version="1"} 1245
# TYPE nv_inference_compute_input_duration_us counter
nv_inference_compute_input_duration_us{model="m",version="1"} 320
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="m",version="1"} 152900
# TYPE nv_inference_compute_output_duration_us counter
nv_inference_compute_output_duration_us{model="m",version="1"} 348
# TYPE nv_pinned_memory_pool_total_bytes gauge
nv_pinned_memory_pool_total_bytes 0
"""


def test_parse_sums_failures_over_reasons_and_averages_per_request():
    counters = parse(EXPOSITION)
    assert set(counters) == {("m", 1), ("other", 3)}
    m = counters[("m", 1)]
    assert (m.requests, m.failures, m.inferences, m.executions) == (7, 3, 21, 7)
    assert m.avg_queue_ms == pytest.approx(1245 / 7 / 1000)
    assert m.avg_compute_ms == pytest.approx((320 + 152900 + 348) / 7 / 1000)
    idle = counters[("other", 3)]
    assert (idle.requests, idle.avg_queue_ms, idle.avg_compute_ms) == (0, None, None)


def test_no_endpoint_is_a_clear_error(unused_port):
    with pytest.raises(MetricsUnavailable, match="TRITON_METRICS_URL"):
        live_counters(None)
    with pytest.raises(MetricsUnavailable, match=f"no metrics at http://127.0.0.1:{unused_port}"):
        live_counters(f"http://127.0.0.1:{unused_port}/metrics")


def test_status_table_shows_each_versions_counters():
    versions = [
        VersionStatus(1, False, "-", "verified", "a" * 40, {}, {}, None, None, None),
        VersionStatus(2, True, "READY", "serving", "b" * 40, {}, {}, None, None, None),
    ]
    status = Status("ready at http://127.0.0.1:8000", [ModelStatus("m", 2, True, versions)])
    counters = {("m", 2): VersionCounters("m", 2, 41, 2, 41, 30, 0.125, 1.5)}
    text = format_status(status, counters=counters).splitlines()
    header = text[3]
    assert "requests" in header and "failures" in header and "queue ms" in header and "compute ms" in header
    unloaded, serving = text[4].split(), text[5].split()
    assert unloaded[:7] == ["1", "-", "verified", "-", "-", "-", "-"]
    assert serving[:8] == ["*", "2", "READY", "serving", "41", "2", "0.125", "1.500"]
    note = format_status(status, counters_note="no metrics at http://x/metrics")
    assert "live counters: no metrics at http://x/metrics" in note


# A model that fails every batch whose first value is negative, as serving/backend/model.py fails
# a batch onnxruntime cannot run: by raising (error responses would count as successes).
PICKY_BACKEND = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "input").as_numpy()
            if rows[0, 0] < 0:
                raise pb_utils.TritonModelException("negative")
            else:
                zeros = np.zeros((rows.shape[0], 10), np.float32)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("probabilities", zeros)]))
        return responses
"""


@pytest.mark.triton
def test_live_counters_of_a_served_version(triton_server):
    folder = triton_server.repository / "counted"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(PICKY_BACKEND)
    export = ExportParams(model_name="counted", dynamic_batching=False)
    (folder / "config.pbtxt").write_text(configs.python_backend_config(export, configs.Signature(64, 10)))
    settings = ClientSettings.local(triton_server, retries=0)
    with TritonClient(settings) as client:
        client.load("counted", timeout_s=60)
        for _ in range(4):
            client.predict("counted", np.ones((3, 64), np.float32))
        for _ in range(2):
            with pytest.raises(ClientError, match="negative"):
                client.predict("counted", -np.ones((1, 64), np.float32))
        counted = live_counters(settings.metrics_url)[("counted", 1)]
        client.unload("counted")
    assert (counted.requests, counted.failures, counted.inferences, counted.executions) == (4, 2, 12, 6)
    assert counted.avg_queue_ms is not None and counted.avg_queue_ms >= 0
    assert counted.avg_compute_ms is not None and counted.avg_compute_ms > 0

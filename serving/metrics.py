"""Live per-version counters from Triton's metrics endpoint (Prometheus text on the metrics port).

Triton counts, per model and version since the version loaded: successful and failed requests,
and the cumulative microseconds requests spent queued and computing (input, inference, output).
`python -m serving status` shows them as requests, failures and average queue and compute time
per request. The endpoint is open (no key), like inference.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

# Triton's metric families (counters) and what we call them.
FAMILIES = {
    "nv_inference_request_success": "requests",
    "nv_inference_request_failure": "failures",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_us",
    "nv_inference_compute_infer_duration_us": "compute_us",
    "nv_inference_compute_output_duration_us": "compute_us",
}


class MetricsUnavailable(RuntimeError):
    """The metrics endpoint did not answer (or is not configured)."""


@dataclass(frozen=True)
class VersionCounters:
    model: str
    version: int
    requests: int  # successful requests since the version loaded
    failures: int
    inferences: int  # rows (batch items) inferred
    executions: int  # model executions, failed ones included (a dynamic batch is one)
    avg_queue_ms: float | None  # mean time a successful request waited in the queue
    avg_compute_ms: float | None  # mean compute time (input + inference + output) per successful request

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse(text: str) -> dict[tuple[str, int], VersionCounters]:
    """The counters of every model version in a Prometheus text exposition of Triton's metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        ours = FAMILIES.get(family.name)
        if ours is None:
            continue
        for sample in family.samples:
            model, label = sample.labels.get("model"), sample.labels.get("version", "")
            if model and label.isdigit() and not sample.name.endswith("_created"):
                totals[(model, int(label))][ours] += sample.value  # failures: summed over reasons
    counters = {}
    for (model, version), values in totals.items():
        requests = int(values["requests"])
        counters[(model, version)] = VersionCounters(
            model=model,
            version=version,
            requests=requests,
            failures=int(values["failures"]),
            inferences=int(values["inferences"]),
            executions=int(values["executions"]),
            avg_queue_ms=values["queue_us"] / requests / 1000 if requests else None,
            avg_compute_ms=values["compute_us"] / requests / 1000 if requests else None,
        )
    return counters


def fetch(url: str, timeout_s: float = 2.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - a configured URL
            return response.read().decode()
    except (urllib.error.URLError, OSError) as error:
        raise MetricsUnavailable(f"no metrics at {url}: {error}") from None


def live_counters(url: str | None, timeout_s: float = 2.0) -> dict[tuple[str, int], VersionCounters]:
    if not url:
        raise MetricsUnavailable("no metrics URL: set TRITON_METRICS_URL for a server that is not the local one")
    return parse(fetch(url, timeout_s))

"""Triton Python-backend model: the router that fronts a model's name during a rollout.

Clients keep calling the model's name, unversioned. While a shadow or canary rollout runs, that
name is this model (serving/rollout/router_config.py writes its config); the champion and the
candidate serve under names no client uses (`<model>.champion`, `<model>.candidate`), each as its
own stored version with its own config, on whatever backend runs them (the Python backend here,
onnxruntime or libtorch on a GPU server). Each request goes on through business-logic scripting
(BLS, `pb_utils.InferenceRequest(..., model_version=...).exec()`, each call in a thread of a pool,
so that its time is taken the moment its answer is back; the requests of a batch go concurrently):

- shadow: to the champion, whose answer the client gets, and a copy to the candidate, in the
  background: the client never waits for it, never sees its answer or its failure. At most
  `rollout_shadow_in_flight` copies are on their way; more are skipped and counted.
- canary: to one of them. A request that carries a key (the request parameter `rollout_key`, or
  the header `rollout-key` that the server forwards as one) goes where the key's hash falls, the
  same version for the whole step (and, as the shares only grow, from the champion to the
  candidate at most once); a request without one goes to the candidate in `rollout_share` percent
  of requests, evenly spread.

It counts what it sees in custom metrics (`pb_utils.MetricFamily`, on Triton's metrics endpoint
beside the per-version `nv_inference_*` families), labelled with the rollout and its step:
requests answered and failed per version, answered requests per latency bucket (the BLS call's
time), top classes per version and, in shadow mode, predictions compared and the class pairs that
disagree. Counting costs a dictionary update per request; the increments reach Triton every
FLUSH_S seconds. The decision (serving/rollout/decision.py) reads them from there.

Runs inside Triton's Python stub only: no project imports here.
"""

import asyncio
import concurrent.futures
import json
import time
import zlib
from collections import Counter

import numpy as np
import triton_python_backend_utils as pb_utils

KEY_PARAMETER = "rollout_key"  # a request parameter naming the client (any string or number)
KEY_HEADER = "rollout-key"  # the same as a header; the server forwards it as a request parameter
FLUSH_S = 0.2  # seconds between two hand-overs of the counts to Triton's metrics
SPREAD = 0.6180339887498949  # golden ratio: request n without a key falls at frac(n * SPREAD)

FAMILIES = {
    "rollout_requests_total": "Requests the router sent to a version, by outcome (answered, failed)",
    "rollout_latency_total": "Answered requests per latency bucket (le: the bucket's upper bound, seconds)",
    "rollout_predictions_total": "Predictions (rows) per top class, by version",
    "rollout_compared_total": "Shadow: predictions both versions answered",
    "rollout_disagreements_total": "Shadow: compared predictions whose top classes differ, by class pair",
    "rollout_shadow_skipped_total": "Shadow: copies not sent because too many were on their way",
}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        p = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.mode = p["rollout_mode"]
        if self.mode not in ("shadow", "canary"):
            raise pb_utils.TritonModelException(f"rollout_mode must be shadow or canary, got {self.mode!r}")
        self.share = float(p.get("rollout_share", "0"))  # percent of requests the candidate answers (canary)
        self.versions = {
            "champion": (p["rollout_champion_model"], int(p["rollout_champion_version"])),
            "candidate": (p["rollout_candidate_model"], int(p["rollout_candidate_version"])),
        }
        self.shadow_limit = int(p.get("rollout_shadow_in_flight", "64"))
        start, ratio, count = p["rollout_latency_buckets"].split(",")
        self.bounds = float(start) * float(ratio) ** np.arange(int(count))
        self.bound_labels = [f"{b:.6g}" for b in self.bounds]
        self.labels = {"model": args["model_name"], "rollout": p["rollout_id"], "step": p["rollout_step"]}
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]
        kind = pb_utils.MetricFamily.COUNTER
        self.families = {
            name: pb_utils.MetricFamily(name=name, description=text, kind=kind) for name, text in FAMILIES.items()
        }
        self.metrics = {}  # (family, labels) -> pb_utils.Metric, made on first use
        self.pending = Counter()  # (family, labels) -> increments not handed to Triton yet
        self.in_flight = 0
        self.sequence = 0
        self.background = set()
        self.flusher = None
        # Threads for the BLS calls: a copy in flight each, and one per request of a batch.
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.shadow_limit + 64)

    # --- counting ---------------------------------------------------------------------------------
    def count(self, family, amount=1, **labels):
        self.pending[(family, tuple(sorted(labels.items())))] += amount

    def flush(self):
        pending, self.pending = self.pending, Counter()
        for (family, labels), amount in pending.items():
            metric = self.metrics.get((family, labels))
            if metric is None:
                metric = self.families[family].Metric(labels={**self.labels, **dict(labels)})
                self.metrics[(family, labels)] = metric
            metric.increment(amount)

    async def flush_forever(self):
        while True:
            await asyncio.sleep(FLUSH_S)
            self.flush()

    # --- routing ----------------------------------------------------------------------------------
    def goes_to_candidate(self, request):
        """Canary: whether this request goes to the candidate (a key's hash, or an even spread)."""
        parameters = json.loads(request.parameters() or "{}")
        key = parameters.get(KEY_PARAMETER, parameters.get(KEY_HEADER))
        if key is not None:
            point = zlib.crc32(str(key).encode()) % 10000 / 100.0
        else:
            self.sequence += 1
            point = (self.sequence * SPREAD) % 1.0 * 100.0
        return point < self.share

    async def call(self, role, tensors, request_id=""):
        """One BLS request to a version, in a thread of the pool (its time is taken there, as soon
        as the answer is back, whatever the event loop is busy with); counted. Returns (response or
        None, error text or None)."""
        model, version = self.versions[role]
        request = pb_utils.InferenceRequest(
            model_name=model,
            model_version=version,
            requested_output_names=self.outputs,
            inputs=tensors,
            request_id=request_id,  # the client's id: the version's live sample keeps it
        )
        response, error, seconds = await asyncio.get_running_loop().run_in_executor(self.pool, self.exec, request)
        labels = {"version": str(version), "role": role}
        self.count("rollout_requests_total", outcome="failed" if error else "answered", **labels)
        if error is None:
            bucket = min(int(np.searchsorted(self.bounds, seconds)), len(self.bounds) - 1)
            self.count("rollout_latency_total", le=self.bound_labels[bucket], **labels)
            for top, n in zip(*np.unique(self.top_classes(response), return_counts=True), strict=True):
                self.count("rollout_predictions_total", int(n), **{"class": str(int(top))}, **labels)
        return response, error

    @staticmethod
    def exec(request):
        started = time.perf_counter()
        try:
            response = request.exec()
            error = response.error().message() if response.has_error() else None
        except Exception as raised:  # the version is gone, or the call itself failed
            response, error = None, str(raised) or type(raised).__name__
        return response, error, time.perf_counter() - started

    def top_classes(self, response):
        """The top class of each row of the first output (none for an output that is not [rows, classes])."""
        if response is None:
            return np.zeros(0, dtype=np.int64)
        values = pb_utils.get_output_tensor_by_name(response, self.outputs[0]).as_numpy()
        return np.argmax(values, axis=-1).ravel() if values.ndim == 2 else np.zeros(0, dtype=np.int64)

    async def shadow(self, copies, champion_classes, request_id):
        """The candidate's copy of a request: counted, compared with the champion's answer, dropped."""
        try:
            response, error = await self.call("candidate", copies, request_id)
            if error is None:
                mine, theirs = self.top_classes(response), await champion_classes
                if len(mine) == len(theirs) and len(mine):
                    self.count("rollout_compared_total", len(mine))
                    for a, b in zip(theirs[mine != theirs], mine[mine != theirs], strict=True):
                        self.count(
                            "rollout_disagreements_total", champion_class=str(int(a)), candidate_class=str(int(b))
                        )
        finally:
            self.in_flight -= 1

    async def route(self, request):
        tensors = [pb_utils.get_input_tensor_by_name(request, name) for name in self.inputs]
        request_id = request.request_id()
        if self.mode == "canary":
            role = "candidate" if self.goes_to_candidate(request) else "champion"
            response, error = await self.call(role, tensors, request_id)
            return self.answer(response, error)
        # Shadow: both calls leave at once, which one first alternating (neither queues behind the
        # other more often); the client waits for the champion's only.
        champion_classes = asyncio.get_running_loop().create_future()
        self.sequence += 1
        champion_call = asyncio.ensure_future(self.call("champion", tensors, request_id)) if self.sequence % 2 else None
        if self.in_flight < self.shadow_limit:
            self.in_flight += 1
            # Copies: the request's own tensors are freed once the client has its answer.
            copies = [pb_utils.Tensor(t.name(), t.as_numpy().copy()) for t in tensors]
            task = asyncio.ensure_future(self.shadow(copies, champion_classes, request_id))
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        else:
            self.count("rollout_shadow_skipped_total")
        response, error = await (champion_call or self.call("champion", tensors, request_id))
        champion_classes.set_result(self.top_classes(response) if error is None else np.zeros(0, dtype=np.int64))
        return self.answer(response, error)

    @staticmethod
    def answer(response, error):
        if error is not None:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(error))
        return pb_utils.InferenceResponse(output_tensors=response.output_tensors())

    async def execute(self, requests):
        """One response per request, in order; the requests of a batch are routed concurrently."""
        if self.flusher is None:
            self.flusher = asyncio.ensure_future(self.flush_forever())
        return list(await asyncio.gather(*(self.route(request) for request in requests)))

    def finalize(self):
        if self.flusher is not None:
            self.flusher.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.flush()

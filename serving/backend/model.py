"""Triton Python-backend model: runs the ONNX file beside it with onnxruntime.

The local CPU server has only Triton's Python backend, so this file stands in for the native
onnxruntime backend. It is copied into every exported version folder (`<model>/<version>/model.py`
next to `model.onnx`) and runs inside Triton's Python stub only: no project imports here.

All requests of one `execute` call (what the dynamic batcher gathered) go through a single
onnxruntime call, then the result rows are cut back into one response per request.

onnxruntime's threads come from the model config's `parameters` (rendered from params.yaml
`export:` by serving/configs.py): `intra_op_thread_count` (0 = onnxruntime's default, one per
core) and `session.intra_op.allow_spinning` ("1" = idle threads busy-wait for the next run). On a
CPU server that also runs Triton's batcher, its HTTP/gRPC threads and other instances, threads
that spin take cores from them.
"""

import collections
import json
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

ONNX_FILENAME = "model.onnx"
INTRA_OP_THREADS = "intra_op_thread_count"
ALLOW_SPINNING = "session.intra_op.allow_spinning"
# The live sample's settings, from the server's environment (serving/live/sample.py sets them).
ENV_RATE = "LIVE_SAMPLE_RATE"
ENV_DIR = "LIVE_SAMPLE_DIR"
ENV_ROTATE_ROWS = "LIVE_SAMPLE_ROTATE_ROWS"
ENV_ROTATE_S = "LIVE_SAMPLE_ROTATE_S"
ENV_RETENTION_DAYS = "LIVE_SAMPLE_RETENTION_DAYS"
INTERNAL_REQUEST_PREFIX = "pipeline:"  # the project's own requests (smoke tests, the gate): never kept
SAMPLE_SETTINGS = (ENV_RATE, ENV_DIR, ENV_ROTATE_ROWS, ENV_ROTATE_S, ENV_RETENTION_DAYS)


def session_options(parameters):
    """onnxruntime session options from the config's parameters; a bad value fails the load."""

    def value(key, default):
        text = parameters.get(key, {}).get("string_value", "")
        return default if text == "" else text

    threads = value(INTRA_OP_THREADS, "0")
    spinning = value(ALLOW_SPINNING, "1")
    if not threads.isdigit() or spinning not in ("0", "1"):
        raise pb_utils.TritonModelException(
            f"model config parameters: {INTRA_OP_THREADS} must be an integer >= 0 (got {threads!r}) and "
            f"{ALLOW_SPINNING} 0 or 1 (got {spinning!r})"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1  # one chain of small operators: nothing to run side by side
    options.add_session_config_entry(ALLOW_SPINNING, spinning)
    return options


class Sampler:
    """Keeps a share of the requests this version answers and writes them as Parquet parts from a
    thread of its own: the request path only draws a random number and, for a kept request,
    copies its rows onto a queue (serving/live/sample.py says what a row holds)."""

    def __init__(self, name, version, input_names, env):
        self.rate = float(env[ENV_RATE])
        self.folder = Path(env[ENV_DIR]) / name
        self.rotate_rows = int(env.get(ENV_ROTATE_ROWS, "10000"))
        self.rotate_s = float(env.get(ENV_ROTATE_S, "300"))
        self.retention_s = float(env.get(ENV_RETENTION_DAYS, "30")) * 86400.0
        self.name, self.version, self.input_names = name, version, input_names
        self.queue = collections.deque()  # (request id, time, {input: rows}, probabilities)
        self.waiting = 0  # rows queued since the last part (approximate: read without a lock)
        self.parts = 0
        self.wake, self.stopping = threading.Event(), threading.Event()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.thread = threading.Thread(target=self.run, name="live-sample", daemon=True)
        self.thread.start()

    def offer(self, requests, spans, merged, probabilities):
        """Called after a batch is answered: each request is kept with probability `rate`."""
        now = time.time()
        for request, (start, end) in zip(requests, spans, strict=True):
            if random.random() < self.rate and not request.request_id().startswith(INTERNAL_REQUEST_PREFIX):
                rows = {name: np.array(merged[name][start:end]) for name in self.input_names}
                self.queue.append((request.request_id(), now, rows, np.array(probabilities[start:end])))
                self.waiting += end - start
        if self.waiting >= self.rotate_rows:
            self.wake.set()

    def run(self):
        last = time.monotonic()
        while not self.stopping.is_set():
            self.wake.wait(timeout=max(0.0, last + self.rotate_s - time.monotonic()))
            self.wake.clear()
            if self.waiting >= self.rotate_rows or time.monotonic() - last >= self.rotate_s:
                self.write()
                last = time.monotonic()
        self.write()

    def write(self):
        """The queued rows as one part (a temporary name, then renamed); then old parts go. A
        failure (a full disk) drops these rows and is logged; requests are never affected."""
        items = []
        while self.queue:
            items.append(self.queue.popleft())
        self.waiting = 0
        try:
            if items:
                import pyarrow as pa  # only a server that keeps a sample needs it
                import pyarrow.parquet as pq

                table = pa.table(self.columns(items, pa))
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
                self.parts += 1
                final = self.folder / f"part-{stamp}-{os.getpid()}-{self.parts:06d}.parquet"
                temporary = self.folder / f".{final.name}.tmp"
                pq.write_table(table, temporary)
                os.replace(temporary, final)
            cutoff = time.time() - self.retention_s
            for part in self.folder.glob("part-*.parquet"):
                if part.stat().st_mtime < cutoff:
                    part.unlink(missing_ok=True)
        except Exception as error:  # the sample is best effort; serving is not
            pb_utils.Logger.log_error(f"live sample of {self.name}: {len(items)} rows not written: {error}")

    def columns(self, items, pa):
        counts = [len(probabilities) for _, _, _, probabilities in items]
        n = sum(counts)

        def rows(arrays):
            values = np.concatenate(arrays, axis=0).reshape(n, -1)
            flat = (
                pa.array(values.ravel().tolist(), pa.string())
                if values.dtype == np.object_
                else pa.array(values.ravel())
            )
            return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])

        probabilities = np.concatenate([p for _, _, _, p in items], axis=0).reshape(n, -1)
        columns = {
            "request_id": pa.array(
                [i for (i, _, _, _), c in zip(items, counts, strict=True) for _ in range(c)], pa.string()
            ),
            "row": pa.array([r for c in counts for r in range(c)], pa.int32()),
            "model": pa.array([self.name] * n, pa.string()),
            "version": pa.array([self.version] * n, pa.int64()),
            "time": pa.array(
                [int(t * 1e6) for (_, t, _, _), c in zip(items, counts, strict=True) for _ in range(c)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
        for name in self.input_names:
            columns[name] = rows([item[2][name] for item in items])
        columns["top_class"] = pa.array(np.argmax(probabilities, axis=1).astype(np.int32))
        columns["probabilities"] = rows([probabilities])
        return columns

    def close(self):
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=30)


class TritonPythonModel:
    def initialize(self, args):
        """Load the ONNX file once; tensor names and dtypes come from the model config."""
        config = json.loads(args["model_config"])
        # One FP32 input (image or numeric rows), or several: a mixed table's FP32 numbers and
        # BYTES categories, which onnxruntime takes as str.
        self.inputs = {i["name"]: pb_utils.triton_string_to_numpy(i["data_type"]) for i in config["input"]}
        # Every output the config lists (probabilities, then e.g. novelty), with its dtype.
        self.output_names = [output["name"] for output in config["output"]]
        self.output_dtypes = [
            pb_utils.triton_string_to_numpy(pb_utils.get_output_config_by_name(config, name)["data_type"])
            for name in self.output_names
        ]

        path = Path(args["model_repository"]) / args["model_version"] / ONNX_FILENAME
        if not path.is_file():
            # A version loaded through the repository API lives in a temporary folder.
            path = Path(__file__).resolve().parent / ONNX_FILENAME
        self.session = ort.InferenceSession(
            str(path), session_options(config.get("parameters", {})), providers=["CPUExecutionProvider"]
        )
        onnx_inputs = [i.name for i in self.session.get_inputs()]
        onnx_outputs = [o.name for o in self.session.get_outputs()]
        # A config/ONNX name mismatch would fail every request; fail the load instead, so the
        # previously loaded version keeps serving.
        if set(self.inputs) != set(onnx_inputs) or not set(self.output_names) <= set(onnx_outputs):
            raise pb_utils.TritonModelException(
                f"config names inputs {sorted(self.inputs)} / outputs {self.output_names}, but {path.name} has "
                f"inputs {onnx_inputs} / outputs {onnx_outputs}"
            )
        # The server's environment, where a config parameter of the same name overrides it.
        parameters = config.get("parameters", {})
        sampling = dict(os.environ)
        sampling.update({key: parameters[key]["string_value"] for key in SAMPLE_SETTINGS if key in parameters})
        self.sampler = None
        if float(sampling.get(ENV_RATE) or "0") > 0.0:
            self.sampler = Sampler(args["model_name"], int(args["model_version"]), list(self.inputs), sampling)

    def execute(self, requests):
        """One response per request, in order; one onnxruntime run for the whole batch (a failure
        of that run fails every request of the batch)."""
        feeds = {
            name: [self._input(request, name, dtype) for request in requests] for name, dtype in self.inputs.items()
        }
        batches = next(iter(feeds.values()))
        try:
            merged = {
                name: parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0) for name, parts in feeds.items()
            }
            outputs = self.session.run(self.output_names, merged)
        except Exception as error:  # onnxruntime raises its own types
            # Raised, not returned as error responses: the Python backend then fails every request
            # of the batch with this message, and Triton counts them as failures in its metrics
            # (error responses count as successes there), so `serving status` shows them.
            raise pb_utils.TritonModelException(f"onnxruntime failed: {error}") from error
        named = [
            (name, output.astype(dtype, copy=False))
            for name, output, dtype in zip(self.output_names, outputs, self.output_dtypes, strict=True)
        ]
        if self.sampler is not None:
            sizes = [len(batch) for batch in batches]
            ends = np.cumsum(sizes)
            self.sampler.offer(requests, zip(ends - sizes, ends, strict=True), merged, named[0][1])
        if len(requests) == 1:  # the common case at low load: nothing to cut
            return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, out) for name, out in named])]
        # Row slices (views) rather than np.split: per request, np.split's generic axis handling
        # costs more than the slicing itself (timed in-process: 102 -> 75 us for 16 one-row requests).
        responses = []
        end = 0
        for batch in batches:
            start, end = end, end + len(batch)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, out[start:end]) for name, out in named]
                )
            )
        return responses

    @staticmethod
    def _input(request, name, dtype):
        values = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
        if dtype == np.object_:  # BYTES: UTF-8 bytes in, str for onnxruntime
            return np.char.decode(values.astype(np.bytes_), "utf-8")
        return values.astype(dtype, copy=False)

    def finalize(self):
        if self.sampler is not None:
            self.sampler.close()  # what waits is written before the version goes
        self.session = None

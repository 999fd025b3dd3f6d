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

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

ONNX_FILENAME = "model.onnx"
INTRA_OP_THREADS = "intra_op_thread_count"
ALLOW_SPINNING = "session.intra_op.allow_spinning"


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
        self.session = None

"""Triton Python-backend model: runs the ONNX file beside it with onnxruntime.

The local CPU server has only Triton's Python backend, so this file stands in for the native
onnxruntime backend. It is copied into every exported version folder (`<model>/<version>/model.py`
next to `model.onnx`) and runs inside Triton's Python stub only: no project imports here.

All requests of one `execute` call (what the dynamic batcher gathered) go through a single
onnxruntime call, then the result rows are cut back into one response per request.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

ONNX_FILENAME = "model.onnx"


class TritonPythonModel:
    def initialize(self, args):
        """Load the ONNX file once; tensor names and dtypes come from the model config."""
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        input_config = pb_utils.get_input_config_by_name(config, self.input_name)
        output_config = pb_utils.get_output_config_by_name(config, self.output_name)
        self.input_dtype = pb_utils.triton_string_to_numpy(input_config["data_type"])
        self.output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])

        path = Path(args["model_repository"]) / args["model_version"] / ONNX_FILENAME
        if not path.is_file():
            # A version loaded through the repository API lives in a temporary folder.
            path = Path(__file__).resolve().parent / ONNX_FILENAME
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        onnx_inputs = [i.name for i in self.session.get_inputs()]
        onnx_outputs = [o.name for o in self.session.get_outputs()]
        # A config/ONNX name mismatch would fail every request; fail the load instead, so the
        # previously loaded version keeps serving.
        if self.input_name not in onnx_inputs or self.output_name not in onnx_outputs:
            raise pb_utils.TritonModelException(
                f"config names input {self.input_name!r} / output {self.output_name!r}, but {path.name} has "
                f"inputs {onnx_inputs} / outputs {onnx_outputs}"
            )

    def execute(self, requests):
        """One response per request, in order; one onnxruntime run for the whole batch."""
        batches = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().astype(self.input_dtype, copy=False)
            for request in requests
        ]
        try:
            merged = batches[0] if len(batches) == 1 else np.concatenate(batches, axis=0)
            (outputs,) = self.session.run([self.output_name], {self.input_name: merged})
        except Exception as error:  # onnxruntime raises its own types; every request gets the message
            message = f"onnxruntime failed: {error}"
            return [
                pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)) for _ in requests
            ]
        outputs = outputs.astype(self.output_dtype, copy=False)
        bounds = np.cumsum([len(batch) for batch in batches])[:-1]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, part)])
            for part in np.split(outputs, bounds)
        ]

    def finalize(self):
        self.session = None

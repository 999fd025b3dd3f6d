"""The candidate: the folder the export stage writes (models/candidate), as a type that export,
evaluate, the gate, the push (serving/) and the orchestration share.

    model.onnx, model.ts, model_card.json, golden.json
    triton/<name>/config.pbtxt, triton/<name>/1/{model.py, model.onnx}    local CPU server (Python backend)
    gpu/<name>/config.pbtxt, gpu/<name>/1/model.onnx                       GPU server, onnxruntime backend
    gpu/<name>_torchscript/config.pbtxt, gpu/<name>_torchscript/1/model.pt GPU server, libtorch backend

Every file name is declared here once. `ModelCard` (lineage, params, metrics, parity, tensors) and
`GoldenSamples` (a few test rows with their expected outputs, for the smoke test after a load) are
what the JSON files hold. Kept free of torch and of serving's libraries, so that a reader imports
neither the exporter nor tritonclient.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import StageError

ONNX_FILE = "model.onnx"  # the served graph: float32 rows (or a mixed table's raw columns) in, probabilities out
TORCHSCRIPT_FILE = "model.ts"  # the same model traced, for the libtorch backend
CARD_FILE = "model_card.json"  # lineage: data hashes, params, metrics, parity, artifact hashes
GOLDEN_FILE = "golden.json"  # a few test rows with expected outputs, for smoke tests after a push
CONFIG_FILE = "config.pbtxt"  # an entry's Triton model config
ENTRY_VERSION = "1"  # the entries hold one version; the push renumbers it in the live repository
ENTRY_BACKEND_FILE = "model.py"  # the Python backend's model (serving/backend/model.py, copied)
ENTRY_ONNX_FILE = "model.onnx"  # what the onnxruntime backend and our Python backend load
ENTRY_TORCHSCRIPT_FILE = "model.pt"  # what the libtorch backend loads
# A push sends one entry: entry -> (folder in the candidate, suffix of the Triton model name).
ENTRIES: dict[str, tuple[str, str]] = {
    "triton": ("triton", ""),
    "gpu": ("gpu", ""),
    "gpu_torchscript": ("gpu", "_torchscript"),
}


class CandidateError(StageError):
    """A candidate file is missing or does not hold what the export stage writes."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=(), populate_by_name=True)


class TensorSpec(_Record):
    name: str
    shape: list[int]  # -1: the batch axis
    datatype: str  # Triton's wire type: FP32, BYTES


class ServedRecord(_Record):
    """What the push adds to the card of a version it stores."""

    version: int
    content_hash: str
    entry: str
    pushed_at: str  # metadata only
    candidate: str  # the folder it was pushed from


class ModelCard(_Record):
    """model_card.json. Extra keys are kept as they are (a card written by another version of the
    project still reads, and writes back unchanged)."""

    model_config = ConfigDict(frozen=True, protected_namespaces=(), populate_by_name=True, extra="allow")

    model_name: str
    created_at: str | None = None  # metadata only
    git_commit: str | None = None
    data: dict[str, Any] = {}  # input name -> {path, md5} (DVC 3's md5 of the file)
    metrics: dict[str, Any] = {}  # train's validation metrics; the push adds evaluate's under "evaluate"
    best_epoch: int | None = None
    privacy: dict[str, Any] | None = None  # DP-SGD as train measured it; None: trained without
    params: dict[str, Any] = {}  # data, train (as stored in the model file), export
    # the network's own config; "model_config" in the file (a name pydantic keeps for itself)
    network: dict[str, Any] = Field(
        default_factory=dict, validation_alias="model_config", serialization_alias="model_config"
    )
    classes: list[int | str] = []
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    parity: dict[str, Any] = {}
    artifacts: dict[str, str] = {}  # file -> sha256
    golden_samples: int = 0
    novelty: dict[str, Any] | None = None
    transform: dict[str, Any] | None = None
    source: dict[str, Any] | None = None  # a pinned data source: the exact objects clean read
    serving: ServedRecord | None = None
    tuning: dict[str, Any] | None = None  # the tune stage's measured table and chosen setting

    def to_json(self) -> dict[str, Any]:
        """The card as model_card.json holds it (the keys that were given, by their file names)."""
        return self.model_dump(by_alias=True, exclude_unset=True)


class GoldenSamples(_Record):
    """golden.json: rows as a client sends them and the outputs the exported model gave for them."""

    model_config = ConfigDict(frozen=True, protected_namespaces=(), extra="forbid")

    model_name: str
    input_name: str = "input"
    output_name: str = "probabilities"
    inputs: list[list[float]] | dict[str, list[list[Any]]]  # float rows, or {input: raw column values}
    input_datatypes: dict[str, str] | None = None  # with several inputs: input -> FP32 | BYTES
    outputs: list[list[float]]
    labels: list[int | str] = []
    atol: float
    more_outputs: dict[str, list[list[float]]] | None = None  # further outputs, in order (e.g. novelty)

    def to_json(self) -> dict[str, Any]:
        """As golden.json holds it (a missing value of a mixed table's numbers stays NaN)."""
        return self.model_dump(exclude_none=True)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CandidateError(f"{path} is missing; re-run the export stage") from None
    except json.JSONDecodeError as error:
        raise CandidateError(f"{path} is not valid JSON ({error}); re-run the export stage") from None


def _checked(schema: type[_Record], raw: Any, path: Path) -> Any:
    try:
        return schema.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or '(top level)'}: {item['msg']}" for item in error.errors()
        )
        raise CandidateError(f"{path} does not hold what the export stage writes ({problems}); re-run it") from None


def read_card(path: Path) -> ModelCard:
    """A model card file (a candidate's, or a stored version's)."""
    card: ModelCard = _checked(ModelCard, _read(path), path)
    return card


def read_golden(path: Path) -> GoldenSamples:
    golden: GoldenSamples = _checked(GoldenSamples, _read(path), path)
    return golden

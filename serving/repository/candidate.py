"""The exported candidate (models/candidate, typed in pipeline/candidate.py) as the push reads it:
one entry, model names, configs and content hashes.

The export stage writes one candidate with several Triton entries (pipeline.candidate.ENTRIES); a
push sends one of them:

    triton           triton/<name>/             the local CPU server (Python backend running ONNX)
    gpu              gpu/<name>/                a GPU server, native onnxruntime backend
    gpu_torchscript  gpu/<name>_torchscript/    a GPU server, native libtorch backend
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.candidate import (
    CARD_FILE,
    CONFIG_FILE,
    ENTRIES,
    ENTRY_VERSION,
    GOLDEN_FILE,
    CandidateError,
    GoldenSamples,
    ModelCard,
    read_card,
    read_golden,
)
from serving.repository.store import RepositoryError

# Files we add beside a version's model files; they are not part of its content hash.
METADATA = frozenset({CONFIG_FILE, CARD_FILE, GOLDEN_FILE})
# Triton loads models from folders named after them; keep names that are safe as one path part.
MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # as export.model_name allows


def validate_model_name(name: object) -> str:
    """A Triton model name that is one safe folder name: letters, digits, '_' and '-' (no '.', '/')."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise RepositoryError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '_' or '-' "
            "(no '/', '.', '..' or empty name); nothing was written"
        )
    return name


# --- model configs (protobuf text <-> message <-> JSON for load_model) ----------------------------
def parse_config(text: str) -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def pin_versions(config: Any, versions: list[int], name: str | None = None) -> Any:
    """A copy of `config` whose version_policy serves exactly `versions` (under `name`, if given)."""
    pinned = type(config)()
    pinned.CopyFrom(config)
    pinned.version_policy.specific.versions[:] = sorted(versions)
    if name is not None:
        pinned.name = name
    return pinned


def config_text(config: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def config_json(config: Any) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(config, preserving_proto_field_name=True, indent=None)


def pinned_versions(config: Any) -> list[int]:
    if config.version_policy.WhichOneof("policy_choice") != "specific":
        return []
    return sorted(int(v) for v in config.version_policy.specific.versions)


# --- content hash ---------------------------------------------------------------------------------
def files_hash(files: Mapping[str, bytes], config: str) -> str:
    """sha256 over a version's model files (relative path + bytes) and its exported config text."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        if rel in METADATA or "__pycache__" in rel.split("/"):
            continue
        digest.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    digest.update(b"config\0" + config.encode())
    return digest.hexdigest()


def read_model_files(folder: Path) -> dict[str, bytes]:
    """The files of an exported version folder, without caches and our metadata."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in METADATA and "__pycache__" not in path.relative_to(folder).parts:
            files[rel] = path.read_bytes()
    return files


# --- the exported candidate -----------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One Triton entry of models/candidate as the export stage writes it."""

    root: Path
    name: str  # the Triton model name of the entry
    config: str  # <entry folder>/<name>/config.pbtxt text
    golden: GoldenSamples  # with the entry's own tensor names
    card: ModelCard | None
    entry: str = "triton"

    @property
    def model_dir(self) -> Path:
        return self.root / ENTRIES[self.entry][0] / self.name

    @property
    def model_files(self) -> Path:
        return self.model_dir / ENTRY_VERSION

    def files(self) -> dict[str, bytes]:
        return read_model_files(self.model_files)

    @property
    def digest(self) -> str:
        return files_hash(self.files(), self.config)


def load_candidate(root: str | Path, entry: str = "triton") -> Candidate:
    """Read and check one entry of a candidate folder. The model name is validated first."""
    root = Path(root)
    if entry not in ENTRIES:
        raise RepositoryError(f"unknown candidate entry {entry!r}; use one of {sorted(ENTRIES)}")
    try:
        golden = read_golden(root / GOLDEN_FILE)
    except CandidateError as error:
        raise RepositoryError(str(error)) from None
    folder, suffix = ENTRIES[entry]
    base = validate_model_name(golden.model_name)
    name = validate_model_name(base + suffix)
    model_dir = root / folder / name
    if not (model_dir / CONFIG_FILE).is_file() or not (model_dir / ENTRY_VERSION).is_dir():
        raise RepositoryError(
            f"{model_dir} must hold {CONFIG_FILE} and a version folder {ENTRY_VERSION}/; re-run the export stage"
        )
    text = (model_dir / CONFIG_FILE).read_text()
    config = parse_config(text)
    if config.name and config.name != name:
        raise RepositoryError(f"{model_dir / CONFIG_FILE} names model {config.name!r} but golden.json says {name!r}")
    if config.input and config.output:  # the smoke test speaks the entry's own tensor names
        named: dict[str, Any] = {"input_name": config.input[0].name, "output_name": config.output[0].name}
        if more := golden.more_outputs:  # further outputs, in order (libtorch: output__1, ...)
            if len(more) != len(config.output) - 1:
                raise RepositoryError(
                    f"{root / GOLDEN_FILE} lists outputs {list(more)} beyond the first, but {model_dir / CONFIG_FILE} "
                    f"declares {[o.name for o in config.output[1:]]}; re-run the export stage"
                )
            named["more_outputs"] = {o.name: values for o, values in zip(config.output[1:], more.values(), strict=True)}
        golden = golden.model_copy(update=named)
    try:
        card = read_card(root / CARD_FILE) if (root / CARD_FILE).exists() else None
    except CandidateError as error:
        raise RepositoryError(str(error)) from None
    return Candidate(root=root, name=name, config=text, golden=golden, card=card, entry=entry)

"""The exported candidate (models/candidate), model names, configs and content hashes.

The export stage writes one candidate with several Triton entries; a push sends one of them:

    triton           triton/<name>/             the local CPU server (Python backend running ONNX)
    gpu              gpu/<name>/                a GPU server, native onnxruntime backend
    gpu_torchscript  gpu/<name>_torchscript/    a GPU server, native libtorch backend
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.repository.store import RepositoryError

CONFIG = "config.pbtxt"
CARD = "model_card.json"
GOLDEN = "golden.json"
# Files we add beside a version's model files; they are not part of its content hash.
METADATA = frozenset({CONFIG, CARD, GOLDEN})
# Triton loads models from folders named after them; keep names that are safe as one path part.
MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # as export.model_name allows
# entry -> (folder in the candidate, suffix of the model name)
ENTRIES: dict[str, tuple[str, str]] = {
    "triton": ("triton", ""),
    "gpu": ("gpu", ""),
    "gpu_torchscript": ("gpu", "_torchscript"),
}


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
    golden: dict[str, Any]  # golden.json, with the entry's own tensor names
    card: dict[str, Any]
    entry: str = "triton"

    @property
    def model_dir(self) -> Path:
        return self.root / ENTRIES[self.entry][0] / self.name

    @property
    def model_files(self) -> Path:
        return self.model_dir / "1"

    def files(self) -> dict[str, bytes]:
        return read_model_files(self.model_files)

    @property
    def digest(self) -> str:
        return files_hash(self.files(), self.config)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise RepositoryError(f"{path} is missing; re-run the export stage") from None
    except json.JSONDecodeError as error:
        raise RepositoryError(f"{path} is not valid JSON ({error}); re-run the export stage") from None
    if not isinstance(value, dict):
        raise RepositoryError(f"{path} must hold a JSON object")
    return value


def load_candidate(root: str | Path, entry: str = "triton") -> Candidate:
    """Read and check one entry of a candidate folder. The model name is validated first."""
    root = Path(root)
    if entry not in ENTRIES:
        raise RepositoryError(f"unknown candidate entry {entry!r}; use one of {sorted(ENTRIES)}")
    golden = _read_json(root / GOLDEN)
    folder, suffix = ENTRIES[entry]
    base = validate_model_name(golden.get("model_name"))
    name = validate_model_name(base + suffix)
    model_dir = root / folder / name
    if not (model_dir / CONFIG).is_file() or not (model_dir / "1").is_dir():
        raise RepositoryError(f"{model_dir} must hold {CONFIG} and a version folder 1/; re-run the export stage")
    text = (model_dir / CONFIG).read_text()
    config = parse_config(text)
    if config.name and config.name != name:
        raise RepositoryError(f"{model_dir / CONFIG} names model {config.name!r} but golden.json says {name!r}")
    for key in ("inputs", "outputs", "atol"):
        if key not in golden:
            raise RepositoryError(f"{root / GOLDEN} has no {key!r}; re-run the export stage")
    if config.input and config.output:  # the smoke test speaks the entry's own tensor names
        golden = {**golden, "input_name": config.input[0].name, "output_name": config.output[0].name}
        if more := golden.get("more_outputs"):  # further outputs, in order (libtorch: output__1, ...)
            if len(more) != len(config.output) - 1:
                raise RepositoryError(
                    f"{root / GOLDEN} lists outputs {list(more)} beyond the first, but {model_dir / CONFIG} declares "
                    f"{[o.name for o in config.output[1:]]}; re-run the export stage"
                )
            golden["more_outputs"] = {
                o.name: values for o, values in zip(config.output[1:], more.values(), strict=True)
            }
    card = _read_json(root / CARD) if (root / CARD).exists() else {}
    return Candidate(root=root, name=name, config=text, golden=golden, card=card, entry=entry)

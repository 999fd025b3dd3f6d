"""The live Triton model repository on disk, and the exported candidate that feeds it.

Layout (what the server loads, plus files Triton ignores):

    <repository>/<model>/config.pbtxt        the serving config; its version_policy pins the serving version
    <repository>/<model>/<N>/model.py, ...   version N, as exported (triton/<model>/1/ of the candidate)
    <repository>/<model>/<N>/config.pbtxt    the config version N was exported with (used to pin it again)
    <repository>/<model>/<N>/golden.json     golden samples for the smoke test after a load
    <repository>/<model>/<N>/model_card.json lineage: commit, data hashes, params, metrics, content hash

The model-level `config.pbtxt` is rewritten only once a version is verified, so the files on disk
always say what serves, and a restarted server (`python -m serving start`) comes back serving it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json, write_text

log = logging.getLogger(__name__)

CONFIG = "config.pbtxt"
CARD = "model_card.json"
GOLDEN = "golden.json"
# Files we add beside a version's model files; they are not part of its content hash.
METADATA = frozenset({CONFIG, CARD, GOLDEN})
# Triton loads models from folders named after them; keep names that are safe as one path part.
MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # as export.model_name allows


class RepositoryError(ValueError):
    """The candidate or the repository is not in the expected shape; nothing was written."""


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


def pin_versions(config: Any, versions: list[int]) -> Any:
    """A copy of `config` whose version_policy serves exactly `versions`."""
    pinned = type(config)()
    pinned.CopyFrom(config)
    pinned.version_policy.specific.versions[:] = sorted(versions)
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
def content_hash(model_files: Path, config: str) -> str:
    """sha256 over the version's model files (relative path + bytes) and the exported config text."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_files.rglob("*") if p.is_file()):
        rel = path.relative_to(model_files).as_posix()
        if rel in METADATA or "__pycache__" in path.parts:
            continue
        digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    digest.update(b"config\0" + config.encode())
    return digest.hexdigest()


# --- the exported candidate -----------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """models/candidate as the export stage writes it; only its local-server entry is pushed."""

    root: Path
    name: str
    config: str  # triton/<name>/config.pbtxt text
    golden: dict[str, Any]
    card: dict[str, Any]

    @property
    def model_files(self) -> Path:
        return self.root / "triton" / self.name / "1"

    @property
    def digest(self) -> str:
        return content_hash(self.model_files, self.config)


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


def load_candidate(root: str | Path) -> Candidate:
    """Read and check a candidate folder. The model name is validated before anything else."""
    root = Path(root)
    golden = _read_json(root / GOLDEN)
    name = validate_model_name(golden.get("model_name"))
    model_dir = root / "triton" / name
    if not (model_dir / CONFIG).is_file() or not (model_dir / "1").is_dir():
        raise RepositoryError(f"{model_dir} must hold {CONFIG} and a version folder 1/; re-run the export stage")
    text = (model_dir / CONFIG).read_text()
    config = parse_config(text)
    if config.name and config.name != name:
        raise RepositoryError(f"{model_dir / CONFIG} names model {config.name!r} but golden.json says {name!r}")
    for key in ("inputs", "outputs", "atol"):
        if key not in golden:
            raise RepositoryError(f"{root / GOLDEN} has no {key!r}; re-run the export stage")
    card = _read_json(root / CARD) if (root / CARD).exists() else {}
    return Candidate(root=root, name=name, config=text, golden=golden, card=card)


# --- the live repository --------------------------------------------------------------------------
class TritonRepository:
    """Numeric versions of models in a local live repository."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def model_dir(self, name: str) -> Path:
        return self.root / validate_model_name(name)

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and MODEL_NAME.fullmatch(p.name))

    def versions(self, name: str) -> list[int]:
        folder = self.model_dir(name)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)

    def next_version(self, name: str) -> int:
        return max(self.versions(name), default=0) + 1

    def version_dir(self, name: str, version: int) -> Path:
        return self.model_dir(name) / str(int(version))

    def serving_config(self, name: str) -> Any | None:
        path = self.model_dir(name) / CONFIG
        return parse_config(path.read_text()) if path.is_file() else None

    def serving_version(self, name: str) -> int | None:
        """The version the model-level config pins (the newest stored one if it pins none)."""
        config = self.serving_config(name)
        if config is None:
            return None
        pinned = [v for v in pinned_versions(config) if v in self.versions(name)]
        return max(pinned, default=max(self.versions(name), default=None))

    def predecessor(self, name: str, version: int | None) -> int | None:
        if version is None:
            return None
        return max((v for v in self.versions(name) if v < version), default=None)

    def version_config(self, name: str, version: int) -> Any:
        path = self.version_dir(name, version) / CONFIG
        if not path.is_file():  # a version written by hand: fall back to the model-level config
            path = self.model_dir(name) / CONFIG
        return parse_config(path.read_text())

    def card(self, name: str, version: int) -> dict[str, Any]:
        path = self.version_dir(name, version) / CARD
        return json.loads(path.read_text()) if path.is_file() else {}

    def golden(self, name: str, version: int) -> dict[str, Any] | None:
        path = self.version_dir(name, version) / GOLDEN
        return json.loads(path.read_text()) if path.is_file() else None

    def stored_hash(self, name: str, version: int) -> str:
        recorded = self.card(name, version).get("serving", {}).get("content_hash")
        if recorded:
            return recorded
        return content_hash(self.version_dir(name, version), config_text(self.version_config(name, version)))

    def find_by_hash(self, name: str, digest: str) -> int | None:
        return next((v for v in reversed(self.versions(name)) if self.stored_hash(name, v) == digest), None)

    def write_version(self, candidate: Candidate, version: int, card: dict[str, Any]) -> Path:
        """Copy the candidate in as `version`: a temp folder beside it, then one rename."""
        target = self.version_dir(candidate.name, version)
        if target.exists():
            raise RepositoryError(f"{target} already exists; the repository changed under us, retry the push")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=target.parent))
        try:
            shutil.copytree(
                candidate.model_files, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
            )
            (tmp / CONFIG).write_text(candidate.config)
            (tmp / GOLDEN).write_text(json.dumps(candidate.golden, indent=2) + "\n")
            (tmp / CARD).write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("wrote %s", target)
        return target

    def copy_version(self, name: str, source: int, target: int) -> None:
        """Replace version `target`'s files with a copy of version `source` (temp folder, rename)."""
        self.remove_version(name, target)
        destination = self.version_dir(name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target}.", suffix=".tmp", dir=destination.parent))
        try:
            shutil.copytree(self.version_dir(name, source), tmp, dirs_exist_ok=True)
            os.replace(tmp, destination)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def remove_version(self, name: str, version: int) -> None:
        """Delete a version folder: renamed aside first, so a reader never sees half of one."""
        target = self.version_dir(name, version)
        if not target.exists():
            return
        trash = target.with_name(f".{version}.removed")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
        log.info("removed %s", target)

    def remove_model_if_empty(self, name: str) -> None:
        folder = self.model_dir(name)
        if folder.is_dir() and not self.versions(name):
            shutil.rmtree(folder)

    def pin(self, name: str, version: int) -> None:
        """Make `version` the one serving on disk: the model-level config pins it."""
        write_text(
            self.model_dir(name) / CONFIG, config_text(pin_versions(self.version_config(name, version), [version]))
        )

    def update_card(self, name: str, version: int, card: dict[str, Any]) -> None:
        write_json(self.version_dir(name, version) / CARD, card)

    def prunable(self, name: str, retention: int) -> list[int]:
        """Versions beyond the `retention` newest, never the serving one or its predecessor."""
        versions = self.versions(name)
        serving = self.serving_version(name)
        keep = set(versions[-retention:]) | {serving, self.predecessor(name, serving)}
        return [v for v in versions if v not in keep]

    def prune(self, name: str, retention: int) -> list[int]:
        removed = self.prunable(name, retention)
        for version in removed:
            self.remove_version(name, version)
        return removed

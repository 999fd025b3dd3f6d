"""Numeric versions of models in a live Triton model repository, on any store.

Layout (what the server loads, plus files Triton ignores):

    <repository>/<model>/config.pbtxt        the serving config; its version_policy pins the serving version
    <repository>/<model>/history.json        the history of pins (serving.repository.history)
    <repository>/<model>/<N>/model.py, ...   version N, as exported (<entry>/<model>/1/ of the candidate)
    <repository>/<model>/<N>/config.pbtxt    the config version N was exported with (used to pin it again)
    <repository>/<model>/<N>/golden.json     golden samples for the smoke test after a load
    <repository>/<model>/<N>/model_card.json lineage: commit, data hashes, params, metrics, content hash

The model-level `config.pbtxt` and the history change only once a version is verified, so the
repository always says what serves, and a restarted server (`python -m serving start`) comes back
serving it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.candidate import CARD_FILE, CONFIG_FILE, GOLDEN_FILE, GoldenSamples, ModelCard
from serving.repository.candidate import (
    METADATA,
    MODEL_NAME,
    Candidate,
    config_text,
    files_hash,
    parse_config,
    pin_versions,
    pinned_versions,
    validate_model_name,
)
from serving.repository.history import History
from serving.repository.local import LocalStore
from serving.repository.s3 import DEFAULT_LEASE_S, S3Store
from serving.repository.store import RepositoryError, Store

log = logging.getLogger(__name__)

HISTORY = "history.json"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/")


def open_store(location: str | Path, *, lease_s: float = DEFAULT_LEASE_S) -> Store:
    """A local folder, or an `s3://` URL; any other URL is refused with what is supported."""
    text = str(location)
    if text.startswith("s3://"):
        return S3Store(text, lease_s=lease_s)
    scheme = _SCHEME.match(text)
    if scheme:
        hint = " (it looks like a URL whose '//' was lost)" if not text.startswith(f"{scheme.group(1)}://") else ""
        raise RepositoryError(
            f"model repository {text!r}{hint}: {scheme.group(1)}:// is not supported; use a local path, "
            "s3://<bucket>/<prefix> or s3://http(s)://<host>:<port>/<bucket>/<prefix>"
        )
    return LocalStore(Path(text))


class TritonRepository:
    """Models and their numeric versions, pins and history, in a local folder or on S3."""

    def __init__(self, location: str | Path | Store, *, lease_s: float = DEFAULT_LEASE_S):
        self.store: Store = location if hasattr(location, "write_folder") else open_store(location, lease_s=lease_s)  # type: ignore[assignment, arg-type]

    @property
    def location(self) -> str:
        return self.store.location

    @property
    def root(self) -> Path | str:
        """The local folder (a Path), or the URL of a remote repository."""
        return self.store.root if isinstance(self.store, LocalStore) else self.store.location

    def __str__(self) -> str:
        return self.location

    # --- local paths (for people and tests looking at a local repository) ------------------------
    def model_dir(self, name: str) -> Path:
        if not isinstance(self.store, LocalStore):
            raise RepositoryError(f"{self.location} is not a local folder")
        return self.store.path(validate_model_name(name))

    def version_dir(self, name: str, version: int) -> Path:
        return self.model_dir(name) / str(int(version))

    # --- reading ---------------------------------------------------------------------------------
    def lock(self, name: str, timeout_s: float):
        return self.store.lock(validate_model_name(name), timeout_s)

    def models(self) -> list[str]:
        return [name for name in self.store.folders("") if MODEL_NAME.fullmatch(name)]

    def versions(self, name: str) -> list[int]:
        return _numbers(self.store.folders(validate_model_name(name)))

    def incomplete_versions(self, name: str) -> list[int]:
        """Version folders whose write never finished (an upload cut off by a crash)."""
        name = validate_model_name(name)
        return sorted(set(_numbers(self.store.all_folders(name))) - set(_numbers(self.store.folders(name))))

    def next_version(self, name: str, also_taken: Iterable[int] = ()) -> int:
        """Above every number stored, half-written, in the history or given: a number is never
        reused, so `model-v<N>` always names one model."""
        name = validate_model_name(name)
        history = self.history(name)
        taken = [*_numbers(self.store.all_folders(name)), *(e["version"] for e in history.events), *also_taken]
        return max(taken, default=0) + 1

    def _read_text(self, key: str) -> str | None:
        data = self.store.read(key)
        return None if data is None else data.decode()

    def serving_config(self, name: str) -> Any | None:
        text = self._read_text(f"{validate_model_name(name)}/{CONFIG_FILE}")
        return None if text is None else parse_config(text)

    def history(self, name: str) -> History:
        name = validate_model_name(name)
        data = self.store.read(f"{name}/{HISTORY}")
        if data is not None:
            return History.parse(data, f"{self.location}/{name}/{HISTORY}")
        config = self.serving_config(name)
        if config is None:
            return History()
        stored = self.versions(name)
        pinned = [v for v in pinned_versions(config) if v in stored]
        return History.synthesized(max(pinned, default=max(stored, default=None)), stored)

    def serving_version(self, name: str) -> int | None:
        """The pinned version (the one verified and committed last), if it is stored."""
        serving = self.history(name).serving
        return serving if serving is not None and serving in self.versions(name) else None

    def rollback_target(self, name: str) -> int | None:
        return self.history(name).rollback_target(self.versions(name))

    def version_config(self, name: str, version: int) -> Any:
        text = self._read_text(f"{validate_model_name(name)}/{int(version)}/{CONFIG_FILE}")
        if text is None:  # a version written by hand: fall back to the model-level config
            text = self._read_text(f"{name}/{CONFIG_FILE}")
        if text is None:
            raise RepositoryError(f"{self.location}/{name} has no {CONFIG_FILE} for version {version}")
        return parse_config(text)

    def _version_json(self, name: str, version: int, filename: str) -> Any | None:
        data = self.store.read(f"{validate_model_name(name)}/{int(version)}/{filename}")
        return None if data is None else json.loads(data)

    def card(self, name: str, version: int) -> ModelCard | None:
        """The stored version's model card (None: it has none, e.g. a version written by hand)."""
        raw = self._version_json(name, version, CARD_FILE)
        return None if raw is None else self._checked(ModelCard, raw, name, version, CARD_FILE)

    def golden(self, name: str, version: int) -> GoldenSamples | None:
        raw = self._version_json(name, version, GOLDEN_FILE)
        return None if raw is None else self._checked(GoldenSamples, raw, name, version, GOLDEN_FILE)

    def _checked(self, schema: Any, raw: Any, name: str, version: int, filename: str) -> Any:
        try:
            return schema.model_validate(raw)
        except ValidationError as error:
            raise RepositoryError(
                f"{self.location}/{name}/{version}/{filename} is not what a push writes: {error}"
            ) from None

    def version_files(self, name: str, version: int) -> dict[str, bytes]:
        """A version's model files as stored (what Triton loads), without our metadata."""
        files = self.store.read_folder(f"{validate_model_name(name)}/{int(version)}")
        return {rel: data for rel, data in files.items() if rel not in METADATA and "__pycache__" not in rel}

    def stored_hash(self, name: str, version: int) -> str:
        card = self.card(name, version)
        if card is not None and card.serving is not None:
            return card.serving.content_hash
        return files_hash(self.version_files(name, version), config_text(self.version_config(name, version)))

    def find_by_hash(self, name: str, digest: str) -> int | None:
        return next((v for v in reversed(self.versions(name)) if self.stored_hash(name, v) == digest), None)

    # --- writing ---------------------------------------------------------------------------------
    def write_version(self, candidate: Candidate, version: int, card: ModelCard) -> None:
        """Write the candidate as `version`: whole, or nothing (RepositoryFull when space runs out)."""
        files = dict(candidate.files())
        files[CONFIG_FILE] = candidate.config.encode()
        files[GOLDEN_FILE] = (json.dumps(candidate.golden.to_json(), indent=2) + "\n").encode()
        files[CARD_FILE] = (json.dumps(card.to_json(), indent=2, sort_keys=True, default=str) + "\n").encode()
        self.store.write_folder(f"{candidate.name}/{int(version)}", files)
        log.info("wrote %s/%s/%d", self.location, candidate.name, version)

    def copy_version(self, name: str, source: int, target: int) -> None:
        """Replace version `target`'s files with a copy of version `source`."""
        files = self.store.read_folder(f"{validate_model_name(name)}/{int(source)}")
        self.remove_version(name, target)
        self.store.write_folder(f"{name}/{int(target)}", files)

    def remove_version(self, name: str, version: int) -> None:
        key = f"{validate_model_name(name)}/{int(version)}"
        self.store.remove_folder(key)
        log.info("removed %s/%s", self.location, key)

    def remove_model_if_empty(self, name: str) -> None:
        name = validate_model_name(name)
        if not self.store.all_folders(name) and self.history(name).serving is None:
            self.store.remove_folder(name)

    def _write_pin_config(self, name: str, version: int) -> None:
        pinned = pin_versions(self.version_config(name, version), [version])
        self.store.write(f"{name}/{CONFIG_FILE}", config_text(pinned).encode())

    def pin(self, name: str, version: int, *, via: str = "push", reject_previous: str | None = None) -> None:
        """Make `version` the serving one: the model-level config pins it, then the history
        records it (the commit point; until then the previous pin stands)."""
        name = validate_model_name(name)
        history = self.history(name)
        self._write_pin_config(name, version)
        self._write_history(name, history.pinned(version, via, reject_previous))

    def reject(self, name: str, version: int, reason: str) -> None:
        name = validate_model_name(name)
        self._write_history(name, self.history(name).rejected(version, reason))

    def _write_history(self, name: str, history: History) -> None:
        self.store.write(f"{name}/{HISTORY}", history.to_bytes())

    def sync_pin_config(self, name: str) -> None:
        """Make the model-level config pin what the history says serves (a cut-off pin can leave
        the config one step ahead of the history)."""
        serving = self.serving_version(name)
        config = self.serving_config(name)
        if serving is not None and (config is None or pinned_versions(config) != [serving]):
            log.warning("%s/%s/%s did not pin version %d; rewriting it", self.location, name, CONFIG_FILE, serving)
            self._write_pin_config(name, serving)

    def prunable(self, name: str, retention: int) -> list[int]:
        """Stored versions prune deletes: all but the serving one, its rollback target and the
        `retention` most recently served good ones (rejected and never-verified ones go first)."""
        stored = self.versions(name)
        keep = self.history(name).keep(stored, retention)
        return [v for v in stored if v not in keep]

    def prune(self, name: str, retention: int) -> list[int]:
        removed = self.prunable(name, retention)
        for version in removed:
            self.remove_version(name, version)
        return removed


def _numbers(names: Iterable[str]) -> list[int]:
    return sorted(int(n) for n in names if n.isdigit() and int(n) > 0)

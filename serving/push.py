"""Push, roll back and inspect what a Triton server serves, as transactions that undo themselves.

A push (`push_candidate`):
  1. validates the candidate and its model name (before any write);
  2. checks the server answers (bounded retries); nothing is written if it does not;
  3. pushes nothing if the candidate's content hash equals a stored version's;
  4. writes the candidate as version N+1 (temp folder, then rename);
  5. loads the model with `version_policy: specific [prev, N+1]`, so prev keeps answering;
  6. waits until N+1 is ready, then smoke-tests N+1 with the golden samples;
  7. narrows serving to N+1 (`specific [N+1]`) and pins it in the model-level config.pbtxt.
On any failure it reloads prev alone, removes N+1's folder (the repository is as it was) and
raises `PushError` saying what failed and what serves now. A rollback is the same switch, towards
an older stored version.

While both versions are loaded, requests that name no version go to the newest (Triton's rule),
so the new version answers from its load until the smoke test a few milliseconds later; clients
that must never see an unverified version can ask for the version `status` reports.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.params import ServingParams
from serving.client import ClientError, ClientSettings, ServerUnreachable, TritonClient
from serving.repository import (
    Candidate,
    TritonRepository,
    config_json,
    load_candidate,
    pin_versions,
    validate_model_name,
)

log = logging.getLogger(__name__)


class PushError(RuntimeError):
    """A push, rollback or prune failed; the message says what failed and what serves now."""


@dataclass(frozen=True)
class ServingSettings:
    """Everything the operations need: how to reach the server and where its repository lives."""

    client: ClientSettings
    repository: Path
    load_timeout_s: float = 60.0
    retention: int = 5

    @classmethod
    def from_params(cls, params: ServingParams, env: Mapping[str, str] | None = None) -> ServingSettings:
        env = os.environ if env is None else env
        return cls(
            client=ClientSettings.from_params(params, env),
            repository=Path(env.get("TRITON_MODEL_REPOSITORY", params.repository)),
            load_timeout_s=float(env.get("TRITON_LOAD_TIMEOUT_S", params.load_timeout_s)),
            retention=params.retention,
        )


@dataclass(frozen=True)
class PushResult:
    model: str
    status: str  # "pushed" | "unchanged" (the same content is already stored)
    version: int  # the version holding the candidate's content
    serving: int | None  # the version serving after the push
    previous: int | None  # what served before
    pruned: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # write, load, smoke, promote, total
    max_abs_diff: float | None = None  # golden smoke test

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionStatus:
    version: int
    serving: bool  # pinned as the serving version on disk
    state: str  # live state on the server: READY, UNAVAILABLE, UNLOADING, or "-" when not loaded/unknown
    git_commit: str | None
    data: dict[str, Any]
    metrics: dict[str, Any]
    created_at: str | None
    pushed_at: str | None
    content_hash: str | None


@dataclass(frozen=True)
class ModelStatus:
    model: str
    serving: int | None
    live_ready: bool | None  # the serving version answers readiness; None when the server is unreachable
    versions: list[VersionStatus]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Status:
    server: str  # "ready at ..." or why not
    models: list[ModelStatus]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- building blocks ------------------------------------------------------------------------------
@contextlib.contextmanager
def _model_lock(repository: TritonRepository, name: str) -> Iterator[None]:
    """One push/rollback/prune per model at a time (on this host)."""
    repository.root.mkdir(parents=True, exist_ok=True)
    with open(repository.root / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def smoke_test(client: TritonClient, name: str, version: int, golden: dict[str, Any]) -> float:
    """Golden inputs through `version`; returns the max abs difference, raises if above atol."""
    inputs = np.asarray(golden["inputs"], dtype=np.float32)
    expected = np.asarray(golden["outputs"], dtype=np.float64)
    got = client.infer(
        name,
        inputs,
        version=version,
        input_name=golden.get("input_name", "input"),
        output_name=golden.get("output_name", "probabilities"),
    )
    if got.shape != expected.shape:
        raise PushError(
            f"smoke test: version {version} returned shape {got.shape}, golden.json expects {expected.shape}"
        )
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    atol = float(golden["atol"])
    if not diff <= atol:
        raise PushError(f"smoke test: version {version} differs from the golden outputs by {diff:.3g} > atol {atol:g}")
    return diff


def wait_version_ready(client: TritonClient, name: str, version: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not client.model_ready(name, version):
        if time.monotonic() > deadline:
            raise PushError(f"version {version} of {name} was not ready within {timeout_s:.0f}s")
        time.sleep(0.1)


def wait_unloaded(client: TritonClient, name: str, timeout_s: float) -> None:
    """Wait until no version of `name` is UNLOADING: with strict readiness the server reports
    NOT ready meanwhile, and the old version's processes are only gone afterwards."""
    deadline = time.monotonic() + timeout_s
    while any(e.get("name") == name and e.get("state") == "UNLOADING" for e in client.repository_index()):
        if time.monotonic() > deadline:
            log.warning("an old version of %s is still unloading after %.0fs", name, timeout_s)
            return
        time.sleep(0.05)


def _load_versions(
    client: TritonClient, repo: TritonRepository, name: str, config_of: int, versions: list[int], timeout_s: float
) -> None:
    """Reload `name` serving exactly `versions`, with the config stored beside version `config_of`."""
    config = pin_versions(repo.version_config(name, config_of), versions)
    client.load(name, config_json(config), timeout_s=timeout_s)


def _serving_now(client: TritonClient, name: str, version: int | None) -> str:
    if version is None:
        return f"no version of {name} is serving (there was none before)"
    try:
        ready = client.model_ready(name, version)
    except (ClientError, ServerUnreachable) as error:
        return f"version {version} of {name} is pinned on disk; the server did not confirm it ({error})"
    return f"version {version} of {name} is serving" + ("" if ready else ", but the server says it is NOT ready")


def _restore(client: TritonClient, repo: TritonRepository, name: str, previous: int | None, timeout_s: float) -> str:
    """Put `previous` back as the only version serving (or unload when there was none)."""
    try:
        if previous is None:
            client.unload(name)
        else:
            _load_versions(client, repo, name, previous, [previous], timeout_s)
        wait_unloaded(client, name, timeout_s)
    except (ClientError, ServerUnreachable) as error:
        log.error("could not restore %s version %s: %s", name, previous, error)
    return _serving_now(client, name, previous)


def _failed_load_reason(client: TritonClient, name: str, version: int) -> str | None:
    """The error Triton still records for a version whose load failed (None if it has none)."""
    for entry in client.repository_index():
        same = entry.get("name") == name and str(entry.get("version")) == str(version)
        if same and entry.get("state") != "READY" and entry.get("reason", "unloaded") != "unloaded":
            return entry.get("reason")
    return None


def _clear_failed_version(
    client: TritonClient, repo: TritonRepository, name: str, previous: int, failed: int, timeout_s: float
) -> None:
    """Triton keeps the error of a version that failed to load in its index, and with strict
    readiness (its default) reports the whole server NOT ready until that version loads: a
    Kubernetes readiness probe would then take a healthy server out of service. So the failed
    number is loaded once more holding a copy of `previous` (same outputs, so no request sees a
    difference), then serving narrows back to `previous`: the entry ends as 'unloaded'."""
    try:
        if _failed_load_reason(client, name, failed) is None:
            return
        repo.copy_version(name, previous, failed)
        _load_versions(client, repo, name, previous, [previous, failed], timeout_s)
        _load_versions(client, repo, name, previous, [previous], timeout_s)
        wait_unloaded(client, name, timeout_s)
    except (ClientError, ServerUnreachable) as error:
        log.warning("could not clear the failed load of %s version %d from the server: %s", name, failed, error)


def _switch(
    client: TritonClient,
    repo: TritonRepository,
    name: str,
    current: int | None,
    target: int,
    golden: dict[str, Any] | None,
    timeout_s: float,
) -> tuple[dict[str, float], float | None]:
    """Serve `target` instead of `current`: load both, check target, narrow to target, pin it."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    both = [target] if current is None or current == target else [current, target]
    _load_versions(client, repo, name, target, both, timeout_s)
    wait_version_ready(client, name, target, timeout_s)
    seconds["load"] = time.perf_counter() - started
    started = time.perf_counter()
    diff = smoke_test(client, name, target, golden) if golden is not None else None
    seconds["smoke"] = time.perf_counter() - started
    started = time.perf_counter()
    if both != [target]:
        _load_versions(client, repo, name, target, [target], timeout_s)
        wait_version_ready(client, name, target, timeout_s)
        wait_unloaded(client, name, timeout_s)
    repo.pin(name, target)
    seconds["promote"] = time.perf_counter() - started
    return seconds, diff


def _check_server(client: TritonClient, repo: TritonRepository, name: str) -> None:
    # Liveness, not readiness: with strict readiness one unrelated broken model makes a server
    # "not ready" while it serves every other model; per-model readiness is checked on load.
    try:
        live = client.is_live()
    except (ServerUnreachable, ClientError) as error:
        raise PushError(f"{error}. Nothing was written; on disk {_pinned_text(repo, name)}.") from error
    if not live:
        raise PushError(
            f"the server at {client.settings.describe()} is not live. Nothing was written; "
            f"on disk {_pinned_text(repo, name)}."
        )


def _pinned_text(repo: TritonRepository, name: str) -> str:
    version = repo.serving_version(name)
    return f"{name} has no serving version" if version is None else f"version {version} of {name} is pinned"


def _version_card(candidate: Candidate, version: int, metrics: dict[str, Any] | None) -> dict[str, Any]:
    card = dict(candidate.card)
    if metrics is not None:
        card["metrics"] = {**card.get("metrics", {}), "evaluate": metrics}
    card["serving"] = {
        "version": version,
        "content_hash": candidate.digest,
        "pushed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),  # metadata only
        "candidate": str(candidate.root),
    }
    return card


def read_metrics(path: str | Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PushError(f"metrics file {path} not found; run the evaluate stage or leave out --metrics") from None
    if not isinstance(value, dict):
        raise PushError(f"metrics file {path} must hold a JSON object")
    return value


# --- the operations -------------------------------------------------------------------------------
def push_candidate(
    candidate_dir: str | Path,
    settings: ServingSettings,
    *,
    metrics: dict[str, Any] | str | Path | None = None,
    prune: bool = True,
) -> PushResult:
    """Push an exported candidate as the next version and make it serve, or undo everything."""
    started = time.perf_counter()
    candidate = load_candidate(candidate_dir)  # validates the model name before any write
    name = candidate.name
    evaluate = metrics if isinstance(metrics, dict) or metrics is None else read_metrics(metrics)
    repo = TritonRepository(settings.repository)
    with TritonClient(settings.client) as client, _model_lock(repo, name):
        _check_server(client, repo, name)
        previous = repo.serving_version(name)
        same = repo.find_by_hash(name, candidate.digest)
        if same is not None:
            return _unchanged(client, repo, name, same, previous, settings, started)

        version = repo.next_version(name)
        write_started = time.perf_counter()
        repo.write_version(candidate, version, _version_card(candidate, version, evaluate))
        write_s = time.perf_counter() - write_started
        try:
            seconds, diff = _switch(client, repo, name, previous, version, candidate.golden, settings.load_timeout_s)
        except (PushError, ClientError, ServerUnreachable) as error:
            serving = _restore(client, repo, name, previous, settings.load_timeout_s)
            if previous is not None:
                _clear_failed_version(client, repo, name, previous, version, settings.load_timeout_s)
            repo.remove_version(name, version)
            if previous is None:
                repo.remove_model_if_empty(name)
            raise PushError(
                f"push of {candidate.root} as version {version} of {name} failed: {error}. "
                f"Rolled back: {serving}; version {version} was removed from {repo.root}."
            ) from error
        pruned = repo.prune(name, settings.retention) if prune else []
    seconds = {"write": write_s, **seconds, "total": time.perf_counter() - started}
    log.info("%s version %d is serving (was %s); %.2fs", name, version, previous, seconds["total"])
    return PushResult(name, "pushed", version, version, previous, pruned, seconds, diff)


def _unchanged(
    client: TritonClient,
    repo: TritonRepository,
    name: str,
    same: int,
    previous: int | None,
    settings: ServingSettings,
    started: float,
) -> PushResult:
    """The content is stored already: push nothing. If it is the pinned version but the server
    does not have it loaded (e.g. a restarted server), load it so that it serves again."""
    if same == previous and not client.model_ready(name, same):
        log.info("%s version %d is pinned but not loaded; loading it", name, same)
        try:
            _load_versions(client, repo, name, same, [same], settings.load_timeout_s)
            wait_version_ready(client, name, same, settings.load_timeout_s)
        except (ClientError, ServerUnreachable) as error:
            raise PushError(f"version {same} of {name} is pinned but failed to load: {error}") from error
    log.info("%s: candidate equals stored version %d; nothing pushed (serving: %s)", name, same, previous)
    seconds = {"total": time.perf_counter() - started}
    return PushResult(name, "unchanged", same, previous, previous, [], seconds)


def rollback(name: str, settings: ServingSettings, *, to: int | None = None) -> PushResult:
    """Serve an earlier stored version (`to`, or the one before the serving one), verified first."""
    started = time.perf_counter()
    repo = TritonRepository(settings.repository)
    validate_model_name(name)
    with TritonClient(settings.client) as client, _model_lock(repo, name):
        _check_server(client, repo, name)
        current = repo.serving_version(name)
        target = to if to is not None else repo.predecessor(name, current)
        if target is None:
            raise PushError(
                f"{name} has no version before {current} to roll back to; {_serving_now(client, name, current)}"
            )
        if target not in repo.versions(name):
            raise PushError(
                f"version {target} of {name} is not stored (stored: {repo.versions(name)}); "
                f"{_serving_now(client, name, current)}"
            )
        try:
            seconds, diff = _switch(
                client, repo, name, current, target, repo.golden(name, target), settings.load_timeout_s
            )
        except (PushError, ClientError, ServerUnreachable) as error:
            serving = _restore(client, repo, name, current, settings.load_timeout_s)
            raise PushError(f"rollback of {name} to version {target} failed: {error}. {serving}.") from error
    seconds["total"] = time.perf_counter() - started
    log.info("%s rolled back to version %d (was %s)", name, target, current)
    return PushResult(name, "rolled back", target, target, current, [], seconds, diff)


def prune_versions(name: str, settings: ServingSettings, retention: int | None = None) -> list[int]:
    """Delete stored versions beyond the retention count (never the serving one or its predecessor)."""
    repo = TritonRepository(settings.repository)
    validate_model_name(name)
    with _model_lock(repo, name):
        return repo.prune(name, settings.retention if retention is None else retention)


def restore_pinned(settings: ServingSettings) -> dict[str, int]:
    """Load every model's pinned version (after a server start in explicit mode, nothing is loaded)."""
    repo = TritonRepository(settings.repository)
    loaded: dict[str, int] = {}
    with TritonClient(settings.client) as client:
        for name in repo.models():
            version = repo.serving_version(name)
            if version is None:
                continue
            _load_versions(client, repo, name, version, [version], settings.load_timeout_s)
            loaded[name] = version
    return loaded


def serving_status(settings: ServingSettings, name: str | None = None) -> Status:
    """Stored versions with lineage, the pinned one, and the live state on the server."""
    repo = TritonRepository(settings.repository)
    names = [validate_model_name(name)] if name else repo.models()
    live: dict[tuple[str, int], str] = {}
    try:
        with TritonClient(settings.client) as client:
            server = f"ready at {settings.client.describe()}" if client.is_ready() else "live but NOT ready"
            for entry in client.repository_index():
                if entry.get("version"):
                    live[(entry["name"], int(entry["version"]))] = entry.get("state", "?")
    except (ServerUnreachable, ClientError) as error:
        server = f"unreachable: {error}"
        live = {}
    reachable = not server.startswith("unreachable")
    models = []
    for model in names:
        serving = repo.serving_version(model)
        rows = []
        for version in repo.versions(model):
            card = repo.card(model, version)
            rows.append(
                VersionStatus(
                    version=version,
                    serving=version == serving,
                    state=live.get((model, version), "-"),
                    git_commit=card.get("git_commit"),
                    data=card.get("data", {}),
                    metrics=card.get("metrics", {}),
                    created_at=card.get("created_at"),
                    pushed_at=card.get("serving", {}).get("pushed_at"),
                    content_hash=card.get("serving", {}).get("content_hash"),
                )
            )
        ready = live.get((model, serving)) == "READY" if reachable and serving is not None else None
        models.append(ModelStatus(model, serving, ready, rows))
    return Status(server, models)

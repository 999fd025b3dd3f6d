"""Push, roll back and inspect what a Triton server serves, as transactions that undo themselves.

A push (`push_candidate`):
  1. validates the candidate and its model name (before any write);
  2. checks the server answers (bounded retries); nothing is written if it does not;
  3. reconciles the server with the repository: what serves now is asked from the server; a
     server serving versions the repository does not hold is refused, and one left serving
     something other than the pinned version (a push cut off earlier) gets the pinned one back;
  4. pushes nothing if the candidate's content is the serving version's;
  5. writes the candidate as version N+1 (whole or nothing; a content already stored under a
     number that is not serving is verified and served under that number instead);
  6. verifies N+1 where no user request can reach it: loaded under a staging name
     (`<model>.staging`) from the stored bytes sent with the load request, smoke-tested with the
     golden samples, unloaded;
  7. switches the model to N+1 (`version_policy: specific [N+1]`; the previous version answers
     until N+1 is ready), checks it once more, then commits: the model-level config.pbtxt pins
     N+1 and the history of pins records it.
On any failure before the commit, an interrupt included (a task timeout, Ctrl-C, an OSError), the
previous version is put back as the only one serving, N+1 is removed, and the error says what
failed and what serves now. A rollback is the same transaction, towards a version from the
history of pins; prune keeps what that history still needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pipeline.candidate import GoldenSamples, ModelCard, ServedRecord
from pipeline.errors import StageError
from serving.client import ClientError, ClientSettings, ServerUnreachable, TritonClient
from serving.overrides import Overrides
from serving.params import ServingParams
from serving.repository import (
    Candidate,
    RepositoryError,
    RepositoryFull,
    TritonRepository,
    config_json,
    load_candidate,
    pin_versions,
    validate_model_name,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
STAGING_SUFFIX = ".staging"  # '.' cannot occur in our model names, so no model is ever called this
# Failures that undo the transaction and end it with a PushError (anything else is re-raised as is
# after the undo: an interrupt stays an interrupt, a bug keeps its traceback).
EXPECTED = (StageError, ClientError, ServerUnreachable)

# Loaded once at a failed staging version so that Triton forgets the failure (see _drop_staging).
_PLACEHOLDER_MODEL = b"""
class TritonPythonModel:
    def execute(self, requests):
        return []
"""


class PushError(StageError):
    """A push, rollback or prune failed; the message says what failed and what serves now."""


@dataclass(frozen=True)
class ServingSettings:
    """Everything the operations need: how to reach the server and where its repository lives."""

    client: ClientSettings
    repository: Path | str  # a local folder (Path) or an s3:// URL (str)
    load_timeout_s: float = 60.0
    retention: int = 5
    candidate_entry: str = "triton"  # which entry of the candidate to push (see serving.repository.candidate)

    @classmethod
    def resolve(cls, params: ServingParams, overrides: Overrides, root: Path | None = None) -> ServingSettings:
        """Params `serving:` with `overrides` (serving/overrides.py: the environment, an Airflow
        Connection, a command line), checked as params are; a relative local repository and state
        folder are taken relative to `root` when given (where `python -m serving start` runs the
        local server). A repository URL (`s3://...`) passes through as it is."""
        resolved = overrides.apply(params)
        repository = resolved.repository
        if "://" not in repository and root is not None and not Path(repository).is_absolute():
            repository = str(root / repository)
        return cls(
            client=ClientSettings.resolve(params, overrides, root),
            repository=repository if "://" in repository else Path(repository),
            load_timeout_s=resolved.load_timeout_s,
            retention=resolved.retention,
            candidate_entry=resolved.candidate_entry,
        )

    @classmethod
    def from_params(
        cls, params: ServingParams, env: Mapping[str, str] | None = None, *, retention: int | None = None
    ) -> ServingSettings:
        """Params with the `TRITON_*` variables of `env` (default: this process's environment; see
        ClientSettings.from_params, and TRITON_MODEL_REPOSITORY, TRITON_LOAD_TIMEOUT_S,
        TRITON_CANDIDATE_ENTRY) and `retention` from a command line."""
        overrides = Overrides.from_env(os.environ if env is None else env)
        if retention is not None:
            overrides = overrides.merged(
                Overrides(params={"retention": retention}, sources={"retention": "--retention"})
            )
        return cls.resolve(params, overrides)

    @property
    def lock_timeout_s(self) -> float:
        """How long an operation waits for another one on the same model (and how long an S3 lease
        lasts): generous enough for a whole push, whose loads each take at most load_timeout_s."""
        return 10 * self.load_timeout_s

    def open_repository(self) -> TritonRepository:
        return TritonRepository(self.repository, lease_s=self.lock_timeout_s)


@dataclass(frozen=True)
class PushResult:
    model: str
    status: str  # "pushed" | "unchanged" (the same content serves already) | "rolled back"
    version: int  # the version holding the candidate's content
    serving: int | None  # the version serving after the push
    previous: int | None  # what served before
    pruned: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # write, verify, switch, commit, total
    max_abs_diff: float | None = None  # golden smoke test

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionStatus:
    version: int
    serving: bool  # the pinned (committed) version
    state: str  # live state on the server: READY, LOADING, UNLOADING, unloaded, UNAVAILABLE (a failed load), "-" (never loaded/unknown)
    verdict: str  # serving | verified (served before) | rejected | unverified (never passed a push)
    git_commit: str | None
    data: dict[str, Any]
    metrics: dict[str, Any]
    created_at: str | None
    pushed_at: str | None
    content_hash: str | None


@dataclass(frozen=True)
class ModelStatus:
    model: str
    serving: int | None  # the pinned version: what the repository says serves
    live_ready: bool | None  # the pinned version is READY on the server; None when the server is unreachable
    versions: list[VersionStatus]
    live_versions: list[int] | None = None  # what the server has READY; None when unreachable
    rollback_target: int | None = None  # what a plain `rollback` would serve
    problem: str | None = None  # where the server and the repository disagree, and what to do

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Status:
    server: str  # "ready at ..." or why not
    models: list[ModelStatus]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- building blocks ------------------------------------------------------------------------------
def staging_name(name: str) -> str:
    return f"{name}{STAGING_SUFFIX}"


def golden_inputs(golden: GoldenSamples) -> np.ndarray | dict[str, np.ndarray]:
    """golden.json's inputs as a client sends them: float32 rows, or {input name: rows} for a
    model with several inputs (a mixed table's numbers and category strings)."""
    if isinstance(golden.inputs, dict):
        types = golden.input_datatypes or {}
        return {
            name: np.asarray(rows, dtype=object if types.get(name) == "BYTES" else np.float32)
            for name, rows in golden.inputs.items()
        }
    return np.asarray(golden.inputs, dtype=np.float32)


def smoke_test(client: TritonClient, name: str, version: int, golden: GoldenSamples) -> float:
    """Golden inputs through `version`; returns the max abs difference over every output golden.json
    lists (`output_name`, then any `more_outputs`), raises if one is above atol."""
    inputs = golden_inputs(golden)
    outputs = {golden.output_name: golden.outputs, **(golden.more_outputs or {})}
    diffs: list[float] = []
    for output_name, values in outputs.items():
        expected = np.asarray(values, dtype=np.float64)
        got = client.infer(name, inputs, version=version, input_name=golden.input_name, output_name=output_name)
        what = "" if not diffs else f" {output_name}"  # the first output's messages stay as they were
        if got.shape != expected.shape:
            raise PushError(
                f"smoke test: version {version} returned{what} shape {got.shape}, golden.json expects {expected.shape}"
            )
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        atol = golden.atol
        if not diff <= atol:
            raise PushError(
                f"smoke test: version {version} differs from the golden{what} outputs by {diff:.3g} > atol {atol:g}"
            )
        diffs.append(diff)
    return max(diffs)


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


def served_versions(client: TritonClient, name: str) -> list[int]:
    """The versions of `name` the server has READY: what serves now, whatever the repository says."""
    return sorted(
        int(entry["version"])
        for entry in client.repository_index()
        if entry.get("name") == name and entry.get("state") == "READY" and str(entry.get("version", "")).isdigit()
    )


def _load_versions(
    client: TritonClient, repo: TritonRepository, name: str, config_of: int, versions: list[int], timeout_s: float
) -> None:
    """Reload `name` serving exactly `versions`, with the config stored beside version `config_of`."""
    config = pin_versions(repo.version_config(name, config_of), versions)
    client.load(name, config_json(config), timeout_s=timeout_s)


def version_files(repo: TritonRepository, name: str, version: int) -> dict[str, bytes]:
    """A stored version's model files, keyed as load_model's `files` wants them."""
    return {f"file:{version}/{rel}": data for rel, data in repo.version_files(name, version).items()}


def load_stored(
    client: TritonClient,
    repo: TritonRepository,
    name: str,
    version: int,
    timeout_s: float,
    files: dict[str, bytes] | None = None,
    as_name: str | None = None,
) -> None:
    """Load stored `version` alone (under `as_name`, if given), its bytes sent with the request.
    Triton then never reads the repository during a switch: from S3 it would download the model
    meanwhile, and requests to the serving version wait seconds for that (seen with moto)."""
    config = pin_versions(repo.version_config(name, version), [version], name=as_name)
    model = as_name or name
    client.load(model, config_json(config), timeout_s=timeout_s, files=files or version_files(repo, name, version))


def _best_effort(what: str, fn: Callable[[], T]) -> T | None:
    """Run one step of an undo; a failure is logged, so that the original error is the one raised."""
    try:
        return fn()
    except Exception as error:
        log.error("%s failed: %s", what, error)
        return None


def _serving_now(client: TritonClient, name: str, version: int | None) -> str:
    if version is None:
        return f"no version of {name} is serving (there was none before)"
    try:
        ready = client.model_ready(name, version)
    except (ClientError, ServerUnreachable) as error:
        return f"version {version} of {name} is pinned; the server did not confirm it serves ({error})"
    return f"version {version} of {name} is serving" + ("" if ready else ", but the server says it is NOT ready")


def _restore(client: TritonClient, repo: TritonRepository, name: str, previous: int | None, timeout_s: float) -> bool:
    """Put `previous` back as the only version serving (or unload when there was none).
    True once the server confirms it."""

    def restore() -> bool:
        if previous is None:
            client.unload(name)
            wait_unloaded(client, name, timeout_s)
            return not served_versions(client, name)
        load_stored(client, repo, name, previous, timeout_s)
        wait_version_ready(client, name, previous, timeout_s)
        wait_unloaded(client, name, timeout_s)
        return served_versions(client, name) == [previous]

    return bool(_best_effort(f"restoring version {previous} of {name}", restore))


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
    if _failed_load_reason(client, name, failed) is None:
        return
    repo.copy_version(name, previous, failed)
    _load_versions(client, repo, name, previous, [previous, failed], timeout_s)
    _load_versions(client, repo, name, previous, [previous], timeout_s)
    wait_unloaded(client, name, timeout_s)


def _wait_server_ready(client: TritonClient, timeout_s: float) -> None:
    """After an unload the server is NOT ready (strict readiness) until the model's processes
    are gone; wait for that, so that a readiness probe never sees the push."""
    deadline = time.monotonic() + timeout_s
    while not client.is_ready() and time.monotonic() < deadline:
        time.sleep(0.1)


def _drop_staging(client: TritonClient, staging: str, version: int, failed: bool, timeout_s: float) -> None:
    """Unload the staging model. After a failed load Triton keeps the failure and reports the
    whole server NOT ready until that name and version load once: load a do-nothing Python model
    there first, then unload."""
    if failed:
        config = {
            "name": staging,
            "backend": "python",
            "max_batch_size": 0,
            "input": [{"name": "unused_in", "data_type": "TYPE_FP32", "dims": [1]}],
            "output": [{"name": "unused_out", "data_type": "TYPE_FP32", "dims": [1]}],
            "version_policy": {"specific": {"versions": [version]}},
            "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        }
        files = {f"file:{version}/model.py": _PLACEHOLDER_MODEL}
        _best_effort(
            f"clearing the failed load of {staging}",
            lambda: client.load(staging, json.dumps(config), timeout_s=timeout_s, files=files),
        )
    _best_effort(f"unloading {staging}", lambda: client.unload(staging))
    if failed:  # after a success the switch runs while the staging model unloads, then waits once
        _best_effort("waiting for the server to be ready", lambda: _wait_server_ready(client, min(timeout_s, 30.0)))


def verify_staged(
    client: TritonClient,
    repo: TritonRepository,
    name: str,
    version: int,
    golden: GoldenSamples | None,
    timeout_s: float,
    files: dict[str, bytes] | None = None,
) -> float | None:
    """Load stored `version` under the staging name, from its stored bytes sent with the request
    (no repository write, and no user request names the staging model), smoke-test it, unload it.
    Returns the smoke test's max abs difference."""
    staging = staging_name(name)
    ok = False
    try:
        load_stored(client, repo, name, version, timeout_s, files, as_name=staging)
        wait_version_ready(client, staging, version, timeout_s)
        diff = smoke_test(client, staging, version, golden) if golden is not None else None
        ok = True
        return diff
    finally:
        _drop_staging(client, staging, version, failed=not ok, timeout_s=timeout_s)


def _check_server(client: TritonClient, repo: TritonRepository, name: str) -> None:
    # Liveness, not readiness: with strict readiness one unrelated broken model makes a server
    # "not ready" while it serves every other model; per-model readiness is checked on load.
    try:
        live = client.is_live()
    except (ServerUnreachable, ClientError) as error:
        raise PushError(f"{error}. Nothing was written; {_pinned_text(repo, name)}.") from error
    if not live:
        raise PushError(
            f"the server at {client.settings.describe()} is not live. Nothing was written; {_pinned_text(repo, name)}."
        )


def _pinned_text(repo: TritonRepository, name: str) -> str:
    version = repo.serving_version(name)
    return f"{name} has no serving version" if version is None else f"version {version} of {name} is pinned"


def _keeps_serving(previous: int | None, name: str) -> str:
    return f"version {previous} keeps serving" if previous is not None else f"no version of {name} was serving"


def reconcile(client: TritonClient, repo: TritonRepository, name: str, timeout_s: float) -> int | None:
    """Make the server serve exactly the pinned version; return it (None: nothing pinned, nothing
    served). What serves is asked from the server, never assumed from the repository."""
    served = served_versions(client, name)
    stored = repo.versions(name)
    unknown = [v for v in served if v not in stored]
    if unknown:
        raise PushError(
            f"the server at {client.settings.describe()} serves versions {unknown} of {name}, which the model "
            f"repository {repo} does not hold (it holds {stored or 'none'}). Is TRITON_MODEL_REPOSITORY "
            "(serving.repository) the repository this server loads from? Nothing was written or changed."
        )
    repo.sync_pin_config(name)
    pinned = repo.serving_version(name)
    if served == ([] if pinned is None else [pinned]):
        return pinned
    if pinned is None:
        raise PushError(
            f"the server serves versions {served} of {name}, but {repo} pins none of them; choose the one that "
            f"should serve with `python -m serving rollback --model {name} --to N`. Nothing was written."
        )
    log.warning(
        "the server serves %s of %s, but version %d is pinned (a push or rollback was cut off, or the server "
        "restarted without restoring it); serving %d again",
        served or "nothing",
        name,
        pinned,
        pinned,
    )
    load_stored(client, repo, name, pinned, timeout_s)
    wait_version_ready(client, name, pinned, timeout_s)
    wait_unloaded(client, name, timeout_s)
    golden = repo.golden(name, pinned)
    if golden is not None:
        smoke_test(client, name, pinned, golden)
    return pinned


def _transaction(
    client: TritonClient,
    repo: TritonRepository,
    name: str,
    previous: int | None,
    target: int,
    golden: GoldenSamples | None,
    timeout_s: float,
    *,
    via: str,
    discard: bool,
    reject_previous: str | None = None,
) -> tuple[dict[str, float], float | None]:
    """Serve stored `target` instead of `previous`: verify it in staging, switch, check, commit.
    On any exception the undo runs first (`discard`: remove target's folder), then it propagates."""
    seconds: dict[str, float] = {}
    phase = "verify"
    started = time.perf_counter()
    try:
        files = version_files(repo, name, target)  # what is verified is what will serve
        diff = verify_staged(client, repo, name, target, golden, timeout_s, files)
        seconds["verify"] = time.perf_counter() - started
        phase, started = "switch", time.perf_counter()
        load_stored(client, repo, name, target, timeout_s, files)
        wait_version_ready(client, name, target, timeout_s)
        wait_unloaded(client, name, timeout_s)
        _best_effort("waiting for the server to be ready", lambda: _wait_server_ready(client, min(timeout_s, 30.0)))
        if golden is not None:  # the same bytes passed in staging; this catches a repository read gone wrong
            smoke_test(client, name, target, golden)
        seconds["switch"] = time.perf_counter() - started
        phase, started = "commit", time.perf_counter()
        repo.pin(name, target, via=via, reject_previous=reject_previous)
        seconds["commit"] = time.perf_counter() - started
    except BaseException as error:
        _undo(client, repo, name, previous, target, phase, timeout_s, discard=discard, error=error)
        raise
    return seconds, diff


def _undo(
    client: TritonClient,
    repo: TritonRepository,
    name: str,
    previous: int | None,
    target: int,
    phase: str,
    timeout_s: float,
    *,
    discard: bool,
    error: BaseException,
) -> None:
    """Put back what served before a transaction that did not commit."""
    if phase == "commit" and _best_effort("reading the history", lambda: repo.serving_version(name)) == target:
        return  # the commit was written; what failed came after it
    log.error("serving version %d of %s failed in its %s step (%r); undoing", target, name, phase, error)
    restored = True
    if phase in ("switch", "commit"):
        restored = _restore(client, repo, name, previous, timeout_s)
        if restored and previous is not None:
            _best_effort("re-pinning the previous version", lambda: repo.sync_pin_config(name))
            if discard:
                _best_effort(
                    "clearing the failed load",
                    lambda: _clear_failed_version(client, repo, name, previous, target, timeout_s),
                )
    if not discard and phase == "verify" and isinstance(error, EXPECTED):
        _best_effort("recording the rejection", lambda: repo.reject(name, target, f"failed verification: {error}"))
    if discard and restored:
        _best_effort(f"removing version {target}", lambda: repo.remove_version(name, target))
        if previous is None:
            _best_effort("removing the empty model folder", lambda: repo.remove_model_if_empty(name))
    elif discard:
        log.error(
            "version %d of %s stays in %s, unverified: the server did not confirm version %s serves again; "
            "the next push or rollback restores the pinned version and removes or reuses it",
            target,
            name,
            repo,
            previous,
        )


def _version_card(candidate: Candidate, version: int, metrics: dict[str, Any] | None) -> ModelCard:
    """The candidate's card as the stored version keeps it: with evaluate's metrics and the push's record."""
    card = candidate.card or ModelCard(model_name=candidate.name)
    served = ServedRecord(
        version=version,
        content_hash=candidate.digest,
        entry=candidate.entry,
        pushed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),  # metadata only
        candidate=str(candidate.root),
    )
    update: dict[str, Any] = {"serving": served}
    if metrics is not None:
        update["metrics"] = {**card.metrics, "evaluate": metrics}
    return card.model_copy(update=update)


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
    """Push an exported candidate and make it serve once verified, or undo everything."""
    started = time.perf_counter()
    candidate = load_candidate(candidate_dir, settings.candidate_entry)  # validates the name before any write
    name = candidate.name
    evaluate = metrics if isinstance(metrics, dict) or metrics is None else read_metrics(metrics)
    repo = settings.open_repository()
    with TritonClient(settings.client) as client, repo.lock(name, settings.lock_timeout_s):
        _check_server(client, repo, name)
        previous = reconcile(client, repo, name, settings.load_timeout_s)
        for leftover in repo.incomplete_versions(name):  # an upload cut off by a crash
            repo.remove_version(name, leftover)
        same = repo.find_by_hash(name, candidate.digest)
        if same is not None and same == previous:
            log.info("%s: the candidate is version %d, which serves already; nothing pushed", name, same)
            return PushResult(name, "unchanged", same, previous, previous, [], _total(started))

        write_started = time.perf_counter()
        if same is None:
            version = repo.next_version(name)
            try:
                repo.write_version(candidate, version, _version_card(candidate, version, evaluate))
            except RepositoryFull as error:
                raise PushError(f"{error}; nothing was written; {_keeps_serving(previous, name)}") from error
            discard = True
        else:
            # Stored, but not serving: left by a push cut off before its commit, or served once and
            # replaced since. Verified and served under that number; a leftover is removed on failure.
            version = same
            discard = not repo.history(name).was_pinned(same)
            log.info("%s: the candidate is stored already as version %d, which does not serve; serving it", name, same)
        write_s = time.perf_counter() - write_started
        try:
            seconds, diff = _transaction(
                client,
                repo,
                name,
                previous,
                version,
                candidate.golden,
                settings.load_timeout_s,
                via="push",
                discard=discard,
            )
        except EXPECTED as error:
            removed = discard and version not in repo.versions(name)
            raise PushError(
                f"push of {candidate.root} as version {version} of {name} failed: {error}. Rolled back: "
                f"{_serving_now(client, name, previous)}"
                + (f"; version {version} was removed from {repo}." if removed else ".")
            ) from error
        pruned = _prune(client, repo, name, settings.retention) if prune else []
    seconds = {"write": write_s, **seconds, **_total(started)}
    log.info("%s version %d is serving (was %s); %.2fs", name, version, previous, seconds["total"])
    return PushResult(name, "pushed", version, version, previous, pruned, seconds, diff)


def _total(started: float) -> dict[str, float]:
    return {"total": time.perf_counter() - started}


def rollback(name: str, settings: ServingSettings, *, to: int | None = None) -> PushResult:
    """Serve an earlier version: `to`, or the one served before the serving one that was not
    rejected since (from the history of pins). Verified in staging first, like a push."""
    started = time.perf_counter()
    validate_model_name(name)
    repo = settings.open_repository()
    with TritonClient(settings.client) as client, repo.lock(name, settings.lock_timeout_s):
        _check_server(client, repo, name)
        current = reconcile(client, repo, name, settings.load_timeout_s)
        target = to if to is not None else repo.rollback_target(name)
        if target is None:
            raise PushError(
                f"{name} has no earlier verified version to roll back to (rejected versions are skipped); "
                f"{_serving_now(client, name, current)}"
            )
        if target not in repo.versions(name):
            raise PushError(
                f"version {target} of {name} is not stored (stored: {repo.versions(name)}); "
                f"{_serving_now(client, name, current)}"
            )
        if target == current:
            return PushResult(name, "unchanged", target, current, current, [], _total(started))
        try:
            seconds, diff = _transaction(
                client,
                repo,
                name,
                current,
                target,
                repo.golden(name, target),
                settings.load_timeout_s,
                via="rollback",
                discard=False,
                reject_previous=f"rolled back to {target}",
            )
        except EXPECTED as error:
            raise PushError(
                f"rollback of {name} to version {target} failed: {error}. {_serving_now(client, name, current)}."
            ) from error
    seconds.update(_total(started))
    log.info("%s rolled back to version %d (was %s; %s is marked rejected)", name, target, current, current)
    return PushResult(name, "rolled back", target, target, current, [], seconds, diff)


def _prune(client: TritonClient, repo: TritonRepository, name: str, retention: int) -> list[int]:
    """Prune, never deleting a version the server has loaded (it would then serve a version the
    repository does not hold)."""
    served = set(served_versions(client, name))
    removed = []
    for version in repo.prunable(name, retention):
        if version not in served:
            repo.remove_version(name, version)
            removed.append(version)
    return removed


def prune_versions(name: str, settings: ServingSettings, retention: int | None = None) -> list[int]:
    """Delete stored versions the history no longer needs: all but the serving one, its rollback
    target and the `retention` most recently served good ones."""
    validate_model_name(name)
    if retention is not None:
        given = Overrides(params={"retention": retention}, sources={"retention": "--retention"})
        settings = dataclasses.replace(settings, retention=given.apply(ServingParams()).retention)
    repo = settings.open_repository()
    with TritonClient(settings.client) as client, repo.lock(name, settings.lock_timeout_s):
        _check_server(client, repo, name)
        return _prune(client, repo, name, settings.retention)


def restore_pinned(settings: ServingSettings) -> dict[str, int]:
    """Load every model's pinned version (after a server start in explicit mode, nothing is loaded)."""
    repo = settings.open_repository()
    loaded: dict[str, int] = {}
    with TritonClient(settings.client) as client:
        for name in repo.models():
            version = repo.serving_version(name)
            if version is None:
                continue
            with contextlib.suppress(OSError, RepositoryError):
                repo.sync_pin_config(name)
            _load_versions(client, repo, name, version, [version], settings.load_timeout_s)
            loaded[name] = version
    return loaded


def _verdict(history: Any, version: int, pinned: int | None) -> str:
    if version == pinned:
        return "serving"
    if history.is_rejected(version):
        return "rejected"
    return "verified" if history.was_pinned(version) else "unverified"


def _problem(name: str, pinned: int | None, live: list[int] | None, stored: list[int]) -> str | None:
    if live is None:
        return None
    unknown = [v for v in live if v not in stored]
    if unknown:
        return f"the server serves versions {unknown} that the repository does not hold: is it the server's repository?"
    if pinned is None:
        return None if not live else f"the server serves {live} but no version is pinned"
    if not live:
        return (
            f"version {pinned} is pinned but the server does not serve it (restarted without restoring?); "
            "`python -m serving start` or the next push loads it"
        )
    if live != [pinned]:
        return f"the server serves {live} but version {pinned} is pinned (a cut-off push); the next push or rollback restores {pinned}"
    return None


def serving_status(settings: ServingSettings, name: str | None = None) -> Status:
    """Stored versions with lineage and verdict, the pinned one, and what the server really serves."""
    repo = settings.open_repository()
    names = [validate_model_name(name)] if name else repo.models()
    live: dict[tuple[str, int], str] = {}
    try:
        with TritonClient(settings.client) as client:
            server = f"ready at {settings.client.describe()}" if client.is_ready() else "live but NOT ready"
            for entry in client.repository_index():
                if entry.get("version"):
                    state = entry.get("state", "?")
                    # Triton lists a version it unloaded as UNAVAILABLE too; only a failure has another reason.
                    unloaded = state == "UNAVAILABLE" and entry.get("reason") == "unloaded"
                    live[(entry["name"], int(entry["version"]))] = "unloaded" if unloaded else state
    except (ServerUnreachable, ClientError) as error:
        server = f"unreachable: {error}"
        live = {}
    reachable = not server.startswith("unreachable")
    models = []
    for model in names:
        history = repo.history(model)
        stored = repo.versions(model)
        pinned = repo.serving_version(model)
        rows = []
        for version in stored:
            card = repo.card(model, version) or ModelCard(model_name=model)
            rows.append(
                VersionStatus(
                    version=version,
                    serving=version == pinned,
                    state=live.get((model, version), "-"),
                    verdict=_verdict(history, version, pinned),
                    git_commit=card.git_commit,
                    data=card.data,
                    metrics=card.metrics,
                    created_at=card.created_at,
                    pushed_at=card.serving.pushed_at if card.serving else None,
                    content_hash=card.serving.content_hash if card.serving else None,
                )
            )
        served = sorted(v for (m, v), state in live.items() if m == model and state == "READY") if reachable else None
        ready = live.get((model, pinned)) == "READY" if reachable and pinned is not None else None
        target = history.rollback_target(stored)
        models.append(ModelStatus(model, pinned, ready, rows, served, target, _problem(model, pinned, served, stored)))
    return Status(server, models)

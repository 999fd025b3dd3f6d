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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.candidate import ModelCard, ServedRecord
from serving.client import TritonClient
from serving.errors import PushError
from serving.loading import load_versions, served_versions
from serving.overrides import Overrides
from serving.params import ServingParams
from serving.repository import (
    Candidate,
    RepositoryError,
    RepositoryFull,
    TritonRepository,
    load_candidate,
    validate_model_name,
)
from serving.rollout.state import load_state, recover, refuse_during_rollout
from serving.settings import ServingSettings
from serving.transaction import EXPECTED, check_server, keeps_serving, reconcile, serving_now, transaction

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Stored:
    """The candidate in the repository, ready to be verified and served."""

    version: int
    unchanged: bool  # its content is the serving version: nothing to do
    discard: bool  # written by this call and never verified: removed again when it fails
    write_s: float = 0.0


def store_candidate(
    repo: TritonRepository, candidate: Candidate, previous: int | None, evaluate: dict[str, Any] | None
) -> Stored:
    """Write the candidate as the next version, whole or not at all; or find its content stored
    already (the serving version: unchanged; another one: served again under its number)."""
    name = candidate.name
    for leftover in repo.incomplete_versions(name):  # an upload cut off by a crash
        repo.remove_version(name, leftover)
    same = repo.find_by_hash(name, candidate.digest)
    if same is not None and same == previous:
        log.info("%s: the candidate is version %d, which serves already; nothing pushed", name, same)
        return Stored(same, unchanged=True, discard=False)
    started = time.perf_counter()
    if same is not None:
        # Stored, but not serving: left by a push cut off before its commit, or served once and
        # replaced since. Verified and served under that number; a leftover is removed on failure.
        log.info("%s: the candidate is stored already as version %d, which does not serve; serving it", name, same)
        return Stored(same, unchanged=False, discard=not repo.history(name).was_pinned(same))
    version = repo.next_version(name)
    try:
        repo.write_version(candidate, version, _version_card(candidate, version, evaluate))
    except RepositoryFull as error:
        raise PushError(f"{error}; nothing was written; {keeps_serving(previous, name)}") from error
    return Stored(version, unchanged=False, discard=True, write_s=time.perf_counter() - started)


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
        check_server(client, repo, name)
        refuse_during_rollout(repo, name, "push")
        previous = reconcile(client, repo, name, settings.load_timeout_s)
        stored = store_candidate(repo, candidate, previous, evaluate)
        if stored.unchanged:
            return PushResult(name, "unchanged", stored.version, previous, previous, [], _total(started))
        version, discard, write_s = stored.version, stored.discard, stored.write_s
        try:
            seconds, diff = transaction(
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
                f"{serving_now(client, name, previous)}"
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
        check_server(client, repo, name)
        refuse_during_rollout(repo, name, "rollback")
        current = reconcile(client, repo, name, settings.load_timeout_s)
        target = to if to is not None else repo.rollback_target(name)
        if target is None:
            raise PushError(
                f"{name} has no earlier verified version to roll back to (rejected versions are skipped); "
                f"{serving_now(client, name, current)}"
            )
        if target not in repo.versions(name):
            raise PushError(
                f"version {target} of {name} is not stored (stored: {repo.versions(name)}); "
                f"{serving_now(client, name, current)}"
            )
        if target == current:
            return PushResult(name, "unchanged", target, current, current, [], _total(started))
        try:
            seconds, diff = transaction(
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
                f"rollback of {name} to version {target} failed: {error}. {serving_now(client, name, current)}."
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
        check_server(client, repo, name)
        refuse_during_rollout(repo, name, "prune")
        return _prune(client, repo, name, settings.retention)


def restore_pinned(settings: ServingSettings) -> dict[str, int]:
    """Make the server serve every model's pinned version (after a server start in explicit mode,
    nothing is loaded); returns what it loaded. A model that serves exactly its pinned version
    already is left alone, so restoring a running server reloads nothing."""
    repo = settings.open_repository()
    loaded: dict[str, int] = {}
    with TritonClient(settings.client) as client:
        for name in repo.models():
            if (state := load_state(repo, name)) is not None and state.active and recover(client, repo, name) is None:
                continue  # the server runs this model's rollout: the router holds its name
            version = repo.serving_version(name)
            if version is None or served_versions(client, name) == [version]:
                continue
            with contextlib.suppress(OSError, RepositoryError):
                repo.sync_pin_config(name)
            load_versions(client, repo, name, version, [version], settings.load_timeout_s)
            loaded[name] = version
    return loaded

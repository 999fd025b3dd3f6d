"""The transaction every push and rollback runs: serve a stored version instead of the one serving
now (verify it in staging, switch, check, commit the pin), or undo everything; and the checks
before it (the server answers; it serves exactly what the repository pins).

On any failure before the commit, an interrupt included (a task timeout, Ctrl-C, an OSError), the
previous version is put back as the only one serving, the new one is removed (or, in a rollback,
recorded as rejected), and the error says what failed and what serves now.
"""

from __future__ import annotations

import logging
import time

from pipeline.candidate import GoldenSamples
from pipeline.errors import StageError
from serving.client import ClientError, ServerUnreachable, TritonClient
from serving.errors import PushError
from serving.loading import (
    best_effort,
    clear_failed_version,
    load_stored,
    served_versions,
    smoke_test,
    verify_staged,
    version_files,
    wait_server_ready,
    wait_unloaded,
    wait_version_ready,
)
from serving.repository import TritonRepository

log = logging.getLogger(__name__)

# Failures that undo the transaction and end it with a PushError (anything else is re-raised as is
# after the undo: an interrupt stays an interrupt, a bug keeps its traceback).
EXPECTED = (StageError, ClientError, ServerUnreachable)


def serving_now(client: TritonClient, name: str, version: int | None) -> str:
    if version is None:
        return f"no version of {name} is serving (there was none before)"
    try:
        ready = client.model_ready(name, version)
    except (ClientError, ServerUnreachable) as error:
        return f"version {version} of {name} is pinned; the server did not confirm it serves ({error})"
    return f"version {version} of {name} is serving" + ("" if ready else ", but the server says it is NOT ready")


def restore(client: TritonClient, repo: TritonRepository, name: str, previous: int | None, timeout_s: float) -> bool:
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

    return bool(best_effort(f"restoring version {previous} of {name}", restore))


def check_server(client: TritonClient, repo: TritonRepository, name: str) -> None:
    # Liveness, not readiness: with strict readiness one unrelated broken model makes a server
    # "not ready" while it serves every other model; per-model readiness is checked on load.
    try:
        live = client.is_live()
    except (ServerUnreachable, ClientError) as error:
        raise PushError(f"{error}. Nothing was written; {pinned_text(repo, name)}.") from error
    if not live:
        raise PushError(
            f"the server at {client.settings.describe()} is not live. Nothing was written; {pinned_text(repo, name)}."
        )


def pinned_text(repo: TritonRepository, name: str) -> str:
    version = repo.serving_version(name)
    return f"{name} has no serving version" if version is None else f"version {version} of {name} is pinned"


def keeps_serving(previous: int | None, name: str) -> str:
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


def transaction(
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
        best_effort("waiting for the server to be ready", lambda: wait_server_ready(client, min(timeout_s, 30.0)))
        if golden is not None:  # the same bytes passed in staging; this catches a repository read gone wrong
            smoke_test(client, name, target, golden)
        seconds["switch"] = time.perf_counter() - started
        phase, started = "commit", time.perf_counter()
        repo.pin(name, target, via=via, reject_previous=reject_previous)
        seconds["commit"] = time.perf_counter() - started
    except BaseException as error:
        undo(client, repo, name, previous, target, phase, timeout_s, discard=discard, error=error)
        raise
    return seconds, diff


def undo(
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
    if phase == "commit" and best_effort("reading the history", lambda: repo.serving_version(name)) == target:
        return  # the commit was written; what failed came after it
    log.error("serving version %d of %s failed in its %s step (%r); undoing", target, name, phase, error)
    restored = True
    if phase in ("switch", "commit"):
        restored = restore(client, repo, name, previous, timeout_s)
        if restored and previous is not None:
            best_effort("re-pinning the previous version", lambda: repo.sync_pin_config(name))
            if discard:
                best_effort(
                    "clearing the failed load",
                    lambda: clear_failed_version(client, repo, name, previous, target, timeout_s),
                )
    if not discard and phase == "verify" and isinstance(error, EXPECTED):
        best_effort("recording the rejection", lambda: repo.reject(name, target, f"failed verification: {error}"))
    if discard and restored:
        best_effort(f"removing version {target}", lambda: repo.remove_version(name, target))
        if previous is None:
            best_effort("removing the empty model folder", lambda: repo.remove_model_if_empty(name))
    elif discard:
        log.error(
            "version %d of %s stays in %s, unverified: the server did not confirm version %s serves again; "
            "the next push or rollback restores the pinned version and removes or reuses it",
            target,
            name,
            repo,
            previous,
        )

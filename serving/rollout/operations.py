"""Start, step, promote and roll back a rollout on a Triton server; each is a transaction that
undoes itself, like a push.

Start (`start_rollout`), with the champion pinned and serving:
  1. the candidate is stored as the next version (as a push stores it), and must take the
     champion's inputs and give its outputs (the router answers for both under one name);
  2. the champion and the candidate are loaded under `<model>.champion` and `<model>.candidate`
     (their stored bytes and configs, sent with the load; no client names them), each smoke-tested
     with its golden samples: the candidate's verification, where no user request reaches it;
  3. the router takes the model's name (serving/backend/router.py, as the candidate's version
     number): Triton keeps answering with the champion until the router is ready;
  4. `<model>/rollout.json` says it runs.
If anything fails, the champion is put back alone under the name and the candidate version is
removed (or, when it was stored before, left as it was), and the error says so.

A step (`set_step`) reloads the router with the next share (Triton switches when the new one is
ready). Promotion (`promote`) is the push's own transaction from the champion to the candidate:
verified in staging, switched, smoke-tested, pinned (the history records it: `via: rollout`);
rollback (`roll_back`) puts the champion back alone and records the candidate as rejected, as a
rollback does. Both then unload the two backing names and write how the rollout ended.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.client import TritonClient
from serving.errors import PushError
from serving.loading import (
    best_effort,
    load_stored,
    smoke_test,
    version_files,
    wait_unloaded,
    wait_version_ready,
)
from serving.push import PushResult, push_candidate, read_metrics, store_candidate
from serving.repository import TritonRepository, load_candidate, validate_model_name
from serving.rollout.params import RolloutParams
from serving.rollout.router_config import Routing, incompatible, router_config, router_files
from serving.rollout.state import (
    RolloutState,
    backing_names,
    load_state,
    now,
    refuse_during_rollout,
    save_state,
    unload_backing,
)
from serving.settings import ServingSettings
from serving.transaction import EXPECTED, check_server, reconcile, restore, serving_now, transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """What start_rollout did: a rollout began (`state`), or there was nothing to roll out
    (`pushed`: no champion yet, so the candidate was pushed directly; or the same content serves)."""

    state: RolloutState | None
    pushed: PushResult | None = None


def routing(state: RolloutState, params: RolloutParams) -> Routing:
    names = backing_names(state.model)
    return Routing(
        rollout_id=state.id,
        step=state.step,
        mode=state.mode,
        share=state.share,
        champion=(names["champion"], state.champion),
        candidate=(names["candidate"], state.candidate),
        shadow_in_flight=params.shadow_in_flight,
    )


def load_router(
    client: TritonClient, repo: TritonRepository, state: RolloutState, params: RolloutParams, timeout_s: float
) -> None:
    """(Re)load the router under the model's name for the state's step; Triton answers with what
    held the name until the router is ready."""
    config = router_config(
        repo.version_config(state.model, state.champion), state.model, state.candidate, routing(state, params)
    )
    from serving.repository import config_json

    client.load(state.model, config_json(config), timeout_s=timeout_s, files=router_files(state.candidate))
    wait_version_ready(client, state.model, state.candidate, timeout_s)
    wait_unloaded(client, state.model, timeout_s)


def load_backing(
    client: TritonClient, repo: TritonRepository, name: str, role: str, version: int, timeout_s: float
) -> None:
    """One version under its backing name, from its stored bytes, smoke-tested with its golden samples."""
    backing = backing_names(name)[role]
    load_stored(client, repo, name, version, timeout_s, version_files(repo, name, version), as_name=backing)
    wait_version_ready(client, backing, version, timeout_s)
    golden = repo.golden(name, version)
    if golden is not None:
        smoke_test(client, backing, version, golden)


def start_rollout(
    candidate_dir: str | Path,
    settings: ServingSettings,
    params: RolloutParams,
    *,
    metrics: dict[str, Any] | str | Path | None = None,
) -> Started:
    """Put the candidate behind the router, in params.mode (shadow or canary), or undo everything."""
    if params.mode == "direct":
        raise PushError("rollout.mode is direct: push the candidate instead (python -m serving push)")
    if not settings.client.metrics_url:
        raise PushError(
            "a rollout reads Triton's metrics: set TRITON_METRICS_URL (or the Connection's extra metrics_url). "
            "Nothing was written."
        )
    candidate = load_candidate(candidate_dir, settings.candidate_entry)
    name = candidate.name
    evaluate = metrics if isinstance(metrics, dict) or metrics is None else read_metrics(metrics)
    repo = settings.open_repository()
    with TritonClient(settings.client) as client, repo.lock(name, settings.lock_timeout_s):
        check_server(client, repo, name)
        refuse_during_rollout(repo, name, "a new rollout")
        champion = reconcile(client, repo, name, settings.load_timeout_s)
        if champion is not None:
            stored = store_candidate(repo, candidate, champion, evaluate)
            if not stored.unchanged:
                return Started(_begin(client, repo, name, champion, stored.version, stored.discard, settings, params))
        # No champion (a first deployment has nothing to compare with), or the same content serves:
        # the push says which, under its own lock.
    log.info("%s: no champion to roll out against, or the candidate serves already: pushing it directly", name)
    return Started(None, push_candidate(candidate_dir, settings, metrics=evaluate))


def _begin(
    client: TritonClient,
    repo: TritonRepository,
    name: str,
    champion: int,
    version: int,
    discard: bool,
    settings: ServingSettings,
    params: RolloutParams,
) -> RolloutState:
    timeout_s = settings.load_timeout_s
    why = incompatible(repo.version_config(name, champion), repo.version_config(name, version))
    if why is not None:
        if discard:
            repo.remove_version(name, version)
        raise PushError(
            f"version {version} of {name} cannot be rolled out behind version {champion}: {why}. Push it directly "
            f"(rollout.mode: direct). {serving_now(client, name, champion)}."
        )
    started = now()
    state = RolloutState(
        id=uuid.uuid4().hex[:12],
        model=name,
        mode=params.mode,  # type: ignore[arg-type]  # not direct: checked by the caller
        champion=champion,
        candidate=version,
        steps=params.steps,
        started_at=started,
        step_started_at=started,
        params=params.model_dump(mode="json"),
    ).with_event("started")
    save_state(repo, state)
    router_in = False
    try:
        load_backing(client, repo, name, "champion", champion, timeout_s)
        load_backing(client, repo, name, "candidate", version, timeout_s)
        router_in = True
        load_router(client, repo, state, params, timeout_s)
        state = save_state(repo, state.with_event("running", status="running"))
    except BaseException as error:
        restored = restore(client, repo, name, champion, timeout_s) if router_in else True
        unload_backing(client, name)
        if discard and restored:
            best_effort(f"removing version {version}", lambda: repo.remove_version(name, version))
        ended = state.with_event("failed to start", status="rolled back", decided_by="error", reason=str(error))
        best_effort("recording the failed start", lambda: save_state(repo, ended))
        if isinstance(error, EXPECTED):
            raise PushError(
                f"the {params.mode} rollout of version {version} of {name} did not start: {error}. "
                f"{serving_now(client, name, champion)}"
                + (f"; version {version} was removed from {repo}." if discard and restored else ".")
            ) from error
        raise
    log.info("%s", state.describe())
    return state


def active_state(repo: TritonRepository, name: str) -> RolloutState:
    state = load_state(repo, validate_model_name(name))
    if state is None or not state.active:
        raise PushError(f"no rollout of {name} is running" + (f" (the last one: {state.describe()})" if state else ""))
    return state


def set_step(
    settings: ServingSettings, name: str, step: int, observation: dict[str, Any] | None = None
) -> RolloutState:
    """Move a canary to step `step` (its share), keeping the observation the last step passed with."""
    repo = settings.open_repository()
    with TritonClient(settings.client) as client, repo.lock(name, settings.lock_timeout_s):
        state = active_state(repo, name)
        params = RolloutParams.model_validate(state.params)
        moved = state.with_event("step", step=step, step_started_at=now(), passed=[*state.passed, observation or {}])
        load_router(client, repo, moved, params, settings.load_timeout_s)
        return save_state(repo, moved)


def record(
    settings: ServingSettings, name: str, observation: dict[str, Any], status: str | None = None
) -> RolloutState:
    """Keep the latest observation (and a new status, e.g. waiting for a person) in the state."""
    repo = settings.open_repository()
    state = active_state(repo, name)
    changes: dict[str, Any] = {"last": observation}
    if status is not None and status != state.status:
        state = state.with_event(status, status=status)
    return save_state(repo, state.model_copy(update=changes))


def promote(settings: ServingSettings, name: str, decided_by: str, reason: str) -> RolloutState:
    """The candidate serves alone under the name and is pinned, as a push makes it: verified in
    staging, switched, smoke-tested, committed. A failure puts the champion back and ends the
    rollout as rolled back."""
    repo = settings.open_repository()
    with TritonClient(settings.client) as client, repo.lock(name, settings.lock_timeout_s):
        state = active_state(repo, name)
        state = save_state(
            repo, state.with_event("promoting", status="promoting", decided_by=decided_by, reason=reason)
        )
        try:
            transaction(
                client,
                repo,
                name,
                state.champion,
                state.candidate,
                repo.golden(name, state.candidate),
                settings.load_timeout_s,
                via="rollout",
                discard=False,
            )
        except EXPECTED as error:
            why = f"the promotion failed: {error}"
            best_effort("recording the rejection", lambda: repo.reject(name, state.candidate, why))
            ended = save_state(
                repo, state.with_event("rolled back", status="rolled back", decided_by="error", reason=why)
            )
            unload_backing(client, name)
            raise PushError(f"{why}. {serving_now(client, name, state.champion)}.") from error
        unload_backing(client, name)
        ended = save_state(repo, state.with_event("promoted", status="promoted"))
    log.info("%s", ended.describe())
    return ended


def roll_back(settings: ServingSettings, name: str, decided_by: str, reason: str) -> RolloutState:
    """The champion serves alone under the name again (it stayed pinned); the candidate is
    recorded as rejected, as a rollback records the version it leaves."""
    repo = settings.open_repository()
    with TritonClient(settings.client) as client, repo.lock(name, settings.lock_timeout_s):
        state = active_state(repo, name)
        if not restore(client, repo, name, state.champion, settings.load_timeout_s):
            raise PushError(
                f"rolling back the {state.describe()}: the server did not confirm version {state.champion} serves "
                "again; the rollout stays active, try again (or `python -m serving start` after a restart)"
            )
        golden = repo.golden(name, state.champion)
        if golden is not None:
            smoke_test(client, name, state.champion, golden)
        repo.reject(name, state.candidate, f"rolled back by the {state.mode} rollout ({decided_by}): {reason}")
        unload_backing(client, name)
        ended = save_state(
            repo, state.with_event("rolled back", status="rolled back", decided_by=decided_by, reason=reason)
        )
    log.info("%s", ended.describe())
    return ended

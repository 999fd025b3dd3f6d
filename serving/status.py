"""What a Triton server serves, beside what the repository says: stored versions with lineage and
verdict, the pinned one, what the server really has READY, and where the two disagree."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.candidate import ModelCard
from serving.client import ClientError, ServerUnreachable, TritonClient
from serving.repository import validate_model_name
from serving.rollout.state import load_state
from serving.settings import ServingSettings


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
    rollout: str | None = None  # the model's rollout, while one runs (or how the last one ended)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Status:
    server: str  # "ready at ..." or why not
    models: list[ModelStatus]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        problem = _problem(model, pinned, served, stored)
        rollout = load_state(repo, model)
        if rollout is not None and rollout.active and served == [rollout.candidate]:
            problem = None  # the router holds the name, as the candidate's version number: not a cut-off push
        described = rollout.describe() if rollout is not None else None
        models.append(ModelStatus(model, pinned, ready, rows, served, target, problem, described))
    return Status(server, models)

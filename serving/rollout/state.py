"""A rollout's state: one JSON file beside the model's history, `<model>/rollout.json` in the live
repository (local or S3, written whole: a reader sees the old state or the new one).

It is the record of the rollout, as the history of pins is the record of what serves: which
versions, which mode and step, whether it runs, and how it ended and why (`decided_by`: the test,
a limit, a person, a restart). The champion stays the pinned version until a promotion commits,
so a server that restarts mid-rollout comes back serving the champion alone (`recover`, run by
every start of the local server) and the state says so.

While a rollout is active, push, rollback and prune of that model are refused: they would take
the router out from under it (`refuse_during_rollout`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from serving.client import ClientError, ServerUnreachable, TritonClient
from serving.errors import PushError
from serving.loading import best_effort, served_versions
from serving.repository import TritonRepository, validate_model_name

log = logging.getLogger(__name__)

STATE_FILE = "rollout.json"
CHAMPION_SUFFIX = ".champion"  # '.' cannot occur in our model names: no client ever calls these
CANDIDATE_SUFFIX = ".candidate"
ACTIVE = ("starting", "running", "waiting", "promoting")

Status = Literal["starting", "running", "waiting", "promoting", "promoted", "rolled back", "interrupted"]


def backing_names(name: str) -> dict[str, str]:
    """The names the champion and the candidate serve under while the router holds `name`."""
    return {"champion": name + CHAMPION_SUFFIX, "candidate": name + CANDIDATE_SUFFIX}


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class RolloutState(BaseModel):
    """What `<model>/rollout.json` holds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str  # unique per rollout: the router's metrics carry it
    model: str
    mode: Literal["shadow", "canary"]
    champion: int  # the pinned version it is measured against
    candidate: int  # the version rolled out
    steps: list[float]  # the candidate's share (percent) per step; [0.0] in shadow mode
    step: int = 0  # index into steps
    status: Status = "starting"
    started_at: str
    step_started_at: str
    decided_by: str | None = None  # test | limit | person | restart | error
    reason: str = ""
    params: dict[str, Any] = {}  # the rollout: section it runs with
    last: dict[str, Any] | None = None  # the last observation (counts per version, the test's state)
    passed: list[dict[str, Any]] = []  # the observation each passed step ended with
    events: list[dict[str, Any]] = []  # what happened when: started, step, decided, ...

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def share(self) -> float:
        return self.steps[self.step]

    def describe(self) -> str:
        where = (
            f"step {self.step + 1} of {len(self.steps)} ({self.share:g}% of requests)"
            if self.mode == "canary"
            else "shadow"
        )
        text = f"{self.mode} rollout {self.id} of {self.model}: version {self.candidate} against {self.champion}"
        return f"{text}, {where}, {self.status}" + (f" ({self.decided_by}: {self.reason})" if self.reason else "")

    def with_event(self, event: str, **fields: Any) -> RolloutState:
        entry = {"event": event, "at": now(), **fields}
        return self.model_copy(update={"events": [*self.events, entry], **fields_for(fields)})


def fields_for(changes: dict[str, Any]) -> dict[str, Any]:
    """The state fields among an event's fields (the rest only describe the event)."""
    return {key: value for key, value in changes.items() if key in RolloutState.model_fields}


def load_state(repo: TritonRepository, name: str) -> RolloutState | None:
    data = repo.store.read(f"{validate_model_name(name)}/{STATE_FILE}")
    if data is None:
        return None
    try:
        return RolloutState.model_validate(json.loads(data))
    except ValueError as error:
        raise PushError(f"{repo}/{name}/{STATE_FILE} is not a rollout state ({error}); remove it to go on") from None


def save_state(repo: TritonRepository, state: RolloutState) -> RolloutState:
    text = json.dumps(state.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    repo.store.write(f"{validate_model_name(state.model)}/{STATE_FILE}", text.encode())
    return state


def refuse_during_rollout(repo: TritonRepository, name: str, what: str) -> None:
    """A push, rollback or prune must not take the router out from under an active rollout."""
    state = load_state(repo, name)
    if state is not None and state.active:
        raise PushError(
            f"{what} refused: a {state.describe()}. End it first: `python -m serving rollout promote` or "
            f"`python -m serving rollout abort` (--model {name}), or in Airflow the rollout task's form. "
            "Nothing was written or changed."
        )


def router_serves(client: TritonClient, state: RolloutState) -> bool:
    """The server runs this rollout: the router (its id in the config) holds the name, and both
    versions serve under their own names."""
    names = backing_names(state.model)
    try:
        if served_versions(client, state.model) != [state.candidate]:
            return False
        parameters = client.model_config(state.model).get("parameters", {})
        if parameters.get("rollout_id", {}).get("string_value") != state.id:
            return False
        return client.model_ready(names["champion"], state.champion) and client.model_ready(
            names["candidate"], state.candidate
        )
    except (ClientError, ServerUnreachable):
        return False


def unload_backing(client: TritonClient, name: str) -> None:
    """Unload `<model>.champion` and `<model>.candidate` where loaded (best effort: a failure is logged)."""
    for backing in backing_names(name).values():
        if best_effort(f"asking for {backing}", partial(client.model_ready, backing)):
            best_effort(f"unloading {backing}", partial(client.unload, backing))


def recover(client: TritonClient, repo: TritonRepository, name: str) -> RolloutState | None:
    """After a server start: a rollout the server no longer runs ends here. The pinned version is
    the champion unless the promotion committed (the history pins the candidate): the state says
    which, and the caller loads that version alone. A rollout the server still runs is left alone."""
    state = load_state(repo, name)
    if state is None or not state.active or router_serves(client, state):
        return None
    pinned = repo.serving_version(name)
    if state.status == "promoting" and pinned == state.candidate:
        ended = state.with_event(
            "recovered",
            status="promoted",
            decided_by=state.decided_by or "test",
            reason=state.reason or "the promotion committed before the server restarted",
        )
    else:
        ended = state.with_event(
            "recovered",
            status="interrupted",
            decided_by="restart",
            reason=(
                f"the server stopped mid-rollout ({state.status}, step {state.step + 1}); version {pinned} "
                f"(the champion) serves alone; version {state.candidate} was not promoted: roll it out again to retry"
            ),
        )
    unload_backing(client, name)
    log.warning("%s", ended.describe())
    return save_state(repo, ended)

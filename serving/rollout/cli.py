"""`python -m serving rollout start|watch|status|promote|abort`: a rollout from the command line,
the same operations the Airflow task runs (docs/rollout.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipeline.params import load_params
from serving.errors import PushError
from serving.rollout import driver, live, operations
from serving.rollout.params import RolloutParams, rollout_params
from serving.rollout.state import RolloutState, load_state
from serving.settings import ServingSettings


def add_commands(sub: Any) -> list[argparse.ArgumentParser]:
    rollout = sub.add_parser("rollout", help="a shadow or canary rollout, decided by live traffic")
    actions = rollout.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="put a candidate behind the router (rollout.mode of params.yaml)")
    start.add_argument("--candidate", required=True, help="candidate folder written by the export stage")
    start.add_argument("--metrics", help="evaluate metrics JSON to store in the version's model card")
    start.add_argument("--mode", choices=["shadow", "canary"], help="instead of rollout.mode")
    watch = actions.add_parser("watch", help="observe and act until the rollout ends (or waits for a person)")
    status = actions.add_parser("status", help="the rollout's state and, while it runs, its live comparison")
    promote = actions.add_parser("promote", help="promote the candidate now (a person's decision)")
    abort = actions.add_parser("abort", help="roll the candidate back now (a person's decision)")
    for action in (watch, status, promote, abort):
        action.add_argument("--model", help="model name (default: export.model_name)")
    for action in (promote, abort):
        action.add_argument("--reason", default="decided from the command line", help="recorded in the state")
    return [rollout, start, watch, status, promote, abort]


def run(args: argparse.Namespace, settings: ServingSettings, model_name: str) -> dict[str, Any]:
    loaded = load_params(args.params)
    params = rollout_params(loaded, args.params)
    name = getattr(args, "model", None) or model_name
    if args.action == "start":
        if args.mode:
            params = params.model_copy(update={"mode": args.mode})
        started = operations.start_rollout(args.candidate, settings, params, metrics=args.metrics)
        if started.state is None:
            assert started.pushed is not None
            print(
                f"nothing to roll out against: pushed directly ({started.pushed.status} version {started.pushed.version})"
            )
            return {"pushed": started.pushed.to_dict()}
        print(started.state.describe())
        return {"state": started.state.model_dump(mode="json")}
    if args.action == "watch":
        state = driver.watch(settings, name, on_observation=_print_poll)
        print(state.describe())
        return {"state": state.model_dump(mode="json")}
    if args.action == "status":
        return _status(settings, name, args.json)
    decide = operations.promote if args.action == "promote" else operations.roll_back
    state = decide(settings, name, "person", args.reason)
    print(state.describe())
    return {"state": state.model_dump(mode="json")}


def _print_poll(state: RolloutState, observation: live.Observation, action: driver.Action) -> None:
    versions = observation.snapshot()["versions"]
    shown = ", ".join(
        f"{role} v{state.champion if role == 'champion' else state.candidate}: {v['requests']} requests, "
        f"{v['failures']} failed, p95 {v['p95_ms']} ms"
        for role, v in versions.items()
    )
    print(f"step {state.step + 1}/{len(state.steps)}: {shown}; {action.kind}")


def _status(settings: ServingSettings, name: str, as_json: bool) -> dict[str, Any]:
    state = load_state(settings.open_repository(), name)
    if state is None:
        raise PushError(f"{name} has had no rollout")
    result: dict[str, Any] = {"state": state.model_dump(mode="json")}
    if state.active:
        observation = live.read(
            settings.client.metrics_url,
            state,
            RolloutParams.model_validate(state.params),
            sample_dir=settings.sample_dir,
        )
        result["live"] = observation.snapshot()
    if not as_json:
        print(state.describe())
        if "live" in result:
            print(json.dumps(result["live"], indent=2))
    return result

"""`python -m serving start|stop|status|push|rollback|prune|sample|rollout|labels|label|live-report`: thin CLI over
serving.push / status / server / rollout / live.

Human-readable tables by default; `--json` prints one JSON object as the last stdout line (for
Airflow and scripts). Expected failures exit 1 with a one-paragraph message, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import StageError
from pipeline.params import DEFAULT_PATH, load_params
from serving.client import INTERNAL_REQUEST_ID, ClientError, ServerUnreachable, TritonClient
from serving.errors import PushError
from serving.loading import golden_inputs
from serving.metrics import MetricsUnavailable, VersionCounters, live_counters
from serving.params import ServingParams, serving_params
from serving.push import PushResult, prune_versions, push_candidate, rollback
from serving.server import ServerError, ServerSettings, server_state, stop_server
from serving.settings import ServingSettings
from serving.startup import start_local_server
from serving.status import Status, serving_status

log = logging.getLogger("serving")

# Failures a person can act on print as one line; anything else (a ValueError from inside numpy or
# tritonclient included) is a bug and keeps its traceback. PushError, RepositoryError, ParamsError
# and ConfigError are StageErrors.
EXPECTED = (StageError, ServerError, ServerUnreachable, ClientError)


def _metric_text(metrics: dict[str, Any]) -> str:
    evaluate = metrics.get("evaluate")
    source = evaluate if isinstance(evaluate, dict) else metrics
    shown = [f"{k}={v:.4f}" for k, v in source.items() if isinstance(v, float)][:3]
    return " ".join(shown) or "-"


def _data_text(data: dict[str, Any]) -> str:
    parts = [f"{k}:{str(v.get('md5', ''))[:8]}" for k, v in data.items() if isinstance(v, dict)]
    return " ".join(parts) or "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _counter_text(counters: VersionCounters | None) -> str:
    if counters is None:
        return f"{'-':>9} {'-':>8} {'-':>9} {'-':>10}"
    return (
        f"{counters.requests:>9} {counters.failures:>8} {_ms(counters.avg_queue_ms):>9} "
        f"{_ms(counters.avg_compute_ms):>10}"
    )


def format_status(
    status: Status,
    server_process: str | None = None,
    counters: dict[tuple[str, int], VersionCounters] | None = None,
    counters_note: str | None = None,
) -> str:
    """The status table; live counters (since each version loaded) from Triton's metrics endpoint."""
    counters = counters or {}
    lines = [f"server: {status.server}"]
    if server_process:
        lines.append(f"local process: {server_process}")
    if counters_note:
        lines.append(f"live counters: {counters_note}")
    if not status.models:
        lines.append("no models in the repository")
    for model in status.models:
        live = {True: "ready", False: "NOT ready", None: "unknown"}[model.live_ready]
        served = "unknown" if model.live_versions is None else (model.live_versions or "nothing")
        lines.append(
            f"\nmodel {model.model}: pinned version {model.serving} ({live}); the server serves {served}; "
            f"rollback would serve {model.rollback_target}"
        )
        if model.problem:
            lines.append(f"  PROBLEM: {model.problem}")
        if model.rollout:
            lines.append(f"  rollout: {model.rollout}")
        header = (
            f"  {'':1} {'version':>7}  {'state':<11} {'verdict':<10} {'requests':>9} {'failures':>8} "
            f"{'queue ms':>9} {'compute ms':>10}  {'commit':<10} {'data':<22} {'pushed_at':<25} metrics"
        )
        lines.append(header)
        for v in model.versions:
            lines.append(
                f"  {'*' if v.serving else '':1} {v.version:>7}  {v.state:<11} {v.verdict:<10} "
                f"{_counter_text(counters.get((model.model, v.version)))}  {(v.git_commit or '-')[:10]:<10} "
                f"{_data_text(v.data)[:22]:<22} {(v.pushed_at or '-'):<25} {_metric_text(v.metrics)}"
            )
    return "\n".join(lines)


def format_result(result: PushResult) -> str:
    if result.status == "unchanged":
        return (
            f"{result.model}: the candidate equals stored version {result.version}; nothing pushed. "
            f"Serving: version {result.serving}."
        )
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items())
    lines = [f"{result.model}: version {result.version} is serving ({result.status}; was {result.previous})"]
    lines.append(f"  timings: {timing}")
    if result.max_abs_diff is not None:
        lines.append(f"  smoke test: max abs diff vs golden outputs {result.max_abs_diff:.2e}")
    if result.pruned:
        lines.append(f"  pruned versions: {result.pruned}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Params:
    """What the commands read from params.yaml: `serving:`, and the default model name."""

    serving: ServingParams
    model_name: str  # export.model_name
    classes: list[int | str]  # data.classes: the labels the label service accepts


def read_params(path: str) -> Params:
    loaded = load_params(path)
    return Params(serving_params(loaded, path), loaded.export.model_name, list(loaded.data.classes))


# --- commands -------------------------------------------------------------------------------------
def cmd_start(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    server = ServerSettings.from_params(params.serving)
    started = start_local_server(server, ServingSettings.from_params(params.serving).load_timeout_s)
    print(f"tritonserver: {started.state.describe()}")
    for name, version in started.restored.items():
        print(f"loaded {name} version {version} (pinned in the repository)")
    state = started.state
    return {"pid": state.pid, "ready": state.ready, "log": str(server.log_file), "loaded": started.restored}


def cmd_stop(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    pid = stop_server(ServerSettings.from_params(params.serving))
    print(f"tritonserver stopped (pid {pid})" if pid else "no tritonserver was running")
    return {"stopped": pid}


def cmd_status(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    settings = ServingSettings.from_params(params.serving)
    status = serving_status(settings, args.model)
    process = server_state(ServerSettings.from_params(params.serving)).describe()
    note = None
    try:
        counters = live_counters(settings.client.metrics_url)
    except MetricsUnavailable as error:
        counters, note = {}, str(error)
    shown = {m.model for m in status.models}
    counters = {key: value for key, value in counters.items() if key[0] in shown}
    if not args.json:
        print(format_status(status, process, counters, note))
    return {
        **status.to_dict(),
        "local_process": process,
        "counters": [c.to_dict() for _, c in sorted(counters.items())],
        "counters_error": note,
    }


def cmd_push(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    settings = ServingSettings.from_params(params.serving)
    result = push_candidate(args.candidate, settings, metrics=args.metrics, prune=not args.no_prune)
    if not args.json:
        print(format_result(result))
    return result.to_dict()


def cmd_rollback(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    result = rollback(args.model or params.model_name, ServingSettings.from_params(params.serving), to=args.to)
    if not args.json:
        print(format_result(result))
    return result.to_dict()


def cmd_prune(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    name = args.model or params.model_name
    removed = prune_versions(name, ServingSettings.from_params(params.serving), args.retention)
    if not args.json:
        print(f"{name}: pruned versions {removed}" if removed else f"{name}: nothing to prune")
    return {"model": name, "pruned": removed}


def cmd_sample(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    """Send the serving version's golden inputs through tritonclient and show the predictions."""
    name = args.model or params.model_name
    settings = ServingSettings.from_params(params.serving)
    repo = settings.open_repository()
    version = repo.serving_version(name)
    golden = repo.golden(name, version) if version is not None else None
    if version is None or golden is None:
        raise PushError(f"{name} has no serving version with golden samples in {repo.root}; push one first")
    with TritonClient(settings.client) as client:
        probabilities = client.predict(name, golden_inputs(golden), request_id=INTERNAL_REQUEST_ID)
    card = repo.card(name, version)
    classes = (card.classes if card else None) or list(range(probabilities.shape[1]))
    predicted = [classes[i] for i in probabilities.argmax(axis=1)]
    if not args.json:
        print(f"{name} version {version} via {settings.client.describe()}")
        print(f"  expected:  {golden.labels}")
        print(f"  predicted: {predicted}")
    return {"model": name, "version": version, "expected": golden.labels, "predicted": predicted}


def cmd_rollout(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    from serving.rollout import cli as rollout_cli

    return rollout_cli.run(args, ServingSettings.from_params(params.serving), params.model_name)


def cmd_labels(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    """Run the label service in the foreground (Ctrl-C stops it)."""
    from serving.live.label_service import serve, service_key

    sample, labels = params.serving.sample, params.serving.labels
    key = service_key(Path(params.serving.state_dir), create=True)
    assert key is not None
    print(f"label service on http://{labels.host}:{labels.port}, sample and labels in {sample.dir}")
    serve(Path(sample.dir), params.classes, sample.retention_days, key, labels.host, labels.port)
    return {}


def cmd_label(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    """Send the true class of one kept request to the label service."""
    from serving.live.label_service import ENV_KEY, KEY_FILE, send_label, service_key

    labels = params.serving.labels
    url = args.url or f"http://{labels.host}:{labels.port}"
    key = service_key(Path(params.serving.state_dir))
    if key is None:
        raise StageError(f"no key for the label service: set {ENV_KEY}, or run this beside it ({KEY_FILE})")
    stored = send_label(url, key, args.model or params.model_name, args.request_id, args.label, args.row)
    print(f"labelled {stored['model']} request {stored['request_id']} row {stored['row']}: {stored['label']}")
    return {"label": stored}


def cmd_live_report(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    """The served model over time, from the live sample and its labels: HTML and JSON."""
    from pipeline.atomic import write_text
    from serving.live.labels import labelled
    from serving.live.report import live_report, render

    name = args.model or params.model_name
    sample = params.serving.sample
    report = live_report(labelled(Path(sample.dir), name), params.classes, name)
    write_text(Path(args.out), render(report))
    write_text(Path(args.json_out), json.dumps(report, indent=2) + "\n")
    if not args.json:
        for row in report["rows"]:
            print(
                f"{row['day']} {row['served_as']} v{row['version']}: {row['labelled']} labelled, "
                f"accuracy {row['accuracy']:.4f}, macro F1 {row['f1_macro']:.4f}"
            )
        print(f"wrote {args.out} and {args.json_out}" + ("" if report["rows"] else " (no labelled requests yet)"))
    return {"report": str(args.out), "rows": report["rows"]}


COMMANDS: dict[str, Callable[[argparse.Namespace, Params], dict[str, Any]]] = {
    "start": cmd_start,
    "stop": cmd_stop,
    "status": cmd_status,
    "push": cmd_push,
    "rollback": cmd_rollback,
    "prune": cmd_prune,
    "sample": cmd_sample,
    "rollout": cmd_rollout,
    "labels": cmd_labels,
    "label": cmd_label,
    "live-report": cmd_live_report,
}


def _version_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a version is a number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(DEFAULT_PATH), help="params file (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start the local tritonserver (if not running) and serve the pinned versions")
    sub.add_parser("stop", help="stop the local tritonserver (SIGTERM to the PID in its PID file)")
    status = sub.add_parser("status", help="versions stored and serving, lineage, live readiness")
    status.add_argument("--model", help="one model (default: every model in the repository)")
    push = sub.add_parser("push", help="push an exported candidate as the next version")
    push.add_argument("--candidate", required=True, help="candidate folder written by the export stage")
    push.add_argument("--metrics", help="evaluate metrics JSON to store in the version's model card")
    push.add_argument("--no-prune", action="store_true", help="keep old versions beyond serving.retention")
    rollback = sub.add_parser("rollback", help="serve an earlier stored version")
    rollback.add_argument("--model", help="model name (default: export.model_name)")
    rollback.add_argument(
        "--to", type=_version_number, help="version to serve (default: the last good one served before it)"
    )
    prune = sub.add_parser("prune", help="delete versions beyond the retention count")
    prune.add_argument("--model", help="model name (default: export.model_name)")
    prune.add_argument(
        "--retention", type=int, help="good versions to keep (default: serving.retention; checked like it, > 0)"
    )
    sample = sub.add_parser("sample", help="a sample prediction of the serving version's golden rows")
    sample.add_argument("--model", help="model name (default: export.model_name)")
    labels = sub.add_parser("labels", help="the label service: true classes of kept requests, sent later")
    labels.add_argument("action", choices=["serve"], help="serve: run it in the foreground")
    label = sub.add_parser("label", help="send the true class of a kept request to the label service")
    label.add_argument("--request-id", required=True, help="the id the request was sent with")
    label.add_argument("--label", required=True, help="its true class (one of data.classes)")
    label.add_argument("--row", type=int, default=0, help="the row of the request (default: 0)")
    label.add_argument("--model", help="model name (default: export.model_name)")
    label.add_argument("--url", help="the label service (default: http://<serving.labels.host>:<port>)")
    live = sub.add_parser("live-report", help="the served model over time, from the live sample and its labels")
    live.add_argument("--model", help="model name (default: export.model_name)")
    live.add_argument("--out", default="reports/live.html", help="HTML report (default: %(default)s)")
    live.add_argument("--json-out", default="reports/live.json", help="the same as JSON (default: %(default)s)")
    from serving.rollout.cli import add_commands

    rollout = add_commands(sub)
    commands = (sub.choices["start"], sub.choices["stop"], status, push, rollback, prune, sample, labels, label, live)
    for command in (*commands, *rollout):
        command.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        outcome = COMMANDS[args.command](args, read_params(args.params))
    except EXPECTED as error:
        log.error("%s failed: %s", args.command, error)
        print(f"\n{args.command} failed: {error}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "command": args.command, "error": str(error)}))
        return 1
    if args.json:
        print(json.dumps({"ok": True, "command": args.command, **outcome}, default=str))
    return 0

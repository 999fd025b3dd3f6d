"""gate: champion vs challenger, before a push.

The challenger is the candidate's evaluate metrics (its ONNX file scored on the test split). The
champion is the version pinned in the model repository (the one the last verified push or
rollback made serve), scored live through tritonclient on the same test rows with the same
scoring code and in requests of the served model's own max batch size, so both are judged on the
same data. A champion that is pinned but not READY fails the gate (closed), never "first
deployment". Thresholds are TFX-style (`gate:` in params.yaml): absolute floors the challenger
must reach, and a maximum regression against the champion. With no champion (the first deployment) the floors alone decide.
With `gate.max_epsilon` set, the candidate must also have been trained with differential privacy
(its model card's `privacy`) at an epsilon no higher, so a model trained without privacy cannot
replace one trained with it unless the params drop the requirement. With
`gate.max_latency_regression` or `gate.max_throughput_regression` set, the candidate's p99 and
rows/s are measured against the champion's in this step (stages/gate_speed.py) and a candidate that
is right but slower than allowed is refused.

Not a DVC stage: its answer depends on what serves right now. The retraining DAG runs it after
evaluate; it writes a JSON report (decision, reason, per-metric diff, and with `--drift` the drift
stage's summary, shown on the approval page but never deciding) and exits 0 when the
candidate passes, 3 when it is rejected, 1 on an error (unreachable server, missing metric).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import Field, model_validator

from pipeline import atomic
from pipeline.params import DataParams, Fraction, Section, TuneParams, parse_as
from stages import _cli
from stages.gate_speed import judge_speed

if TYPE_CHECKING:  # serving/ (and tritonclient) load only when the champion is scored
    from serving.settings import ServingSettings

log = logging.getLogger(__name__)

REJECTED_EXIT = 3


class GateParams(Section):
    """Champion vs challenger thresholds for the approval gate (TFX-style): every metric named here
    is one where higher is better, as reported by the evaluate stage."""

    floors: dict[str, Fraction] = {"accuracy": 0.95, "f1_macro": 0.95}
    max_regression: dict[str, Fraction] = {"accuracy": 0.01, "f1_macro": 0.01}
    report: str = "reports/gate.json"
    max_epsilon: Annotated[float, Field(gt=0.0)] | None = None  # None: privacy not required
    # Speed against the champion (stages/gate_speed.py), measured as tune: says; None: not judged.
    max_latency_regression: Annotated[float, Field(ge=0.0)] | None = None  # p99 at most (1 + this) x the champion's
    max_throughput_regression: Fraction | None = None  # rows/s at least (1 - this) x the champion's

    @property
    def speed_allowances(self) -> tuple[float | None, float | None]:
        return self.max_latency_regression, self.max_throughput_regression

    @model_validator(mode="after")
    def _check(self) -> GateParams:
        if not self.floors and not self.max_regression:
            raise ValueError("name at least one metric in floors or max_regression")
        return self


@dataclass(frozen=True)
class Check:
    metric: str
    challenger: float
    champion: float | None
    floor: float | None
    max_regression: float | None
    passed: bool
    why: str

    @property
    def delta(self) -> float | None:
        return None if self.champion is None else self.challenger - self.champion


@dataclass(frozen=True)
class Decision:
    passed: bool
    reason: str
    checks: list[Check]
    champion_version: int | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] | None = None  # the drift stage's metrics (metrics/drift.json), shown beside the diff
    privacy: dict[str, Any] | None = None  # the candidate card's DP-SGD figures (None: trained without)
    speed: dict[str, Any] | None = None  # stages/gate_speed.py's figures (None: speed not judged)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["checks"] = [{**asdict(c), "delta": c.delta} for c in self.checks]
        out["diff_markdown"] = diff_markdown(self)
        return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def diff_markdown(decision: Decision) -> str:
    """The metric diff as a Markdown table (the approval form and the task log show it)."""
    champion = "champion" if decision.champion_version is None else f"champion (v{decision.champion_version})"
    lines = [
        f"| metric | challenger | {champion} | delta | floor | max regression | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in decision.checks:
        delta = "-" if c.delta is None else f"{c.delta:+.4f}"
        lines.append(
            f"| {c.metric} | {_fmt(c.challenger)} | {_fmt(c.champion)} | {delta} | {_fmt(c.floor)} | "
            f"{_fmt(c.max_regression)} | {'yes' if c.passed else 'NO'} |"
        )
    if decision.privacy is not None:
        spent = decision.privacy
        lines += ["", f"Differential privacy: epsilon {spent['epsilon']:.3f} spent at delta {spent['delta']:.3g}."]
    if decision.speed is not None:
        from stages.gate_speed import speed_markdown

        lines += [
            "",
            "Speed against the champion (scratch server, alternated rounds, medians):",
            speed_markdown(decision.speed),
        ]
    if decision.drift is not None:
        from pipeline.drift import summary_markdown

        lines += ["", summary_markdown(decision.drift)]
    return "\n".join(lines)


def decide(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    params: GateParams,
    privacy: Mapping[str, Any] | None = None,
    speed: Mapping[str, Any] | None = None,
) -> Decision:
    """Apply the floors and, when there is a champion, the maximum regression to each metric;
    with gate.max_epsilon, require `privacy` (the candidate card's) to be within it; with `speed`
    (stages/gate_speed.py's comparison), its problems refuse the candidate too."""
    names = list(dict.fromkeys([*params.floors, *params.max_regression]))
    for source, metrics in (("challenger", challenger), ("champion", champion)):
        missing = [n for n in names if metrics is not None and not isinstance(metrics.get(n), int | float)]
        if missing:
            raise _cli.StageError(
                f"the {source} metrics have no {missing} (have {sorted(metrics or {})}); "
                "gate.floors / gate.max_regression must name metrics the evaluate stage reports"
            )
    checks = []
    for name in names:
        value = float(challenger[name])
        best = None if champion is None else float(champion[name])
        floor = params.floors.get(name)
        allowed = params.max_regression.get(name)
        problems = []
        if floor is not None and value < floor:
            problems.append(f"{name} {value:.4f} is below the floor {floor:.4f}")
        if best is not None and allowed is not None and value < best - allowed:
            problems.append(
                f"{name} {value:.4f} is {best - value:.4f} below the champion's {best:.4f} "
                f"(at most {allowed:.4f} allowed)"
            )
        checks.append(Check(name, value, best, floor, allowed, not problems, "; ".join(problems)))

    failed = [c.why for c in checks if not c.passed] + privacy_problems(privacy, params.max_epsilon)
    failed += list(speed["problems"]) if speed else []
    if failed:
        reason = "rejected: " + "; ".join(failed)
    elif champion is None:
        reason = "passed: first deployment (no champion serving), every floor met"
    else:
        reason = "passed: every floor met and no metric regressed beyond its allowance against the champion"
        reason += " (nor its speed)" if speed else ""
    return Decision(
        passed=not failed,
        reason=reason,
        checks=checks,
        privacy=dict(privacy) if privacy else None,
        speed=dict(speed) if speed else None,
    )


def privacy_problems(privacy: Mapping[str, Any] | None, max_epsilon: float | None) -> list[str]:
    """Why the candidate's privacy falls short of gate.max_epsilon (empty: it does not)."""
    if max_epsilon is None:
        return []
    if privacy is None:
        return [
            f"the candidate was trained without differential privacy, but gate.max_epsilon is {max_epsilon:g}; "
            "train with train.privacy.enabled: true, or set gate.max_epsilon: null to accept it"
        ]
    epsilon = float(privacy["epsilon"])
    if epsilon > max_epsilon:
        return [
            f"the candidate spent epsilon {epsilon:.3f}, above gate.max_epsilon {max_epsilon:g}; "
            "lower train.privacy.target_epsilon, or raise gate.max_epsilon"
        ]
    return []


# --- the champion, scored live --------------------------------------------------------------
def champion_version(repo: Any, client: Any, model: str) -> int | None:
    """The pinned version of `model` (what the repository says serves), or None on a first
    deployment. Fails closed: a pinned version the server does not have READY, or versions served
    that nothing pins, stop the gate instead of letting a candidate through unchecked."""
    from serving.loading import served_versions

    pinned = repo.serving_version(model)
    served = served_versions(client, model)
    where = client.settings.describe()
    if pinned is None:
        if served:
            raise _cli.StageError(
                f"the server at {where} serves versions {served} of {model}, but the model repository {repo} pins "
                "none: the gate cannot tell which one is the champion. Point TRITON_MODEL_REPOSITORY "
                "(serving.repository) at the repository that server loads from."
            )
        return None
    if not client.model_ready(model, pinned):
        raise _cli.StageError(
            f"the champion, {model} version {pinned} (pinned in {repo}), is not READY on the server at {where}, "
            "so it cannot be scored and the gate will not pass a candidate unchecked. Load it again "
            "(`python -m serving start` reloads pinned versions; `python -m serving status` shows the state), "
            "then re-run the gate."
        )
    if served != [pinned]:
        log.warning("the server serves %s of %s; the champion is the pinned version %d", served, model, pinned)
    return pinned


def served_batch_size(client: Any, model: str, version: int) -> int | None:
    """The served model's own max_batch_size (None: it takes no batch axis, send one request)."""
    size = int(client.model_config(model, version).get("max_batch_size", 0))
    return size if size > 0 else None


def champion_probabilities(
    client: Any, model: str, version: int, features: np.ndarray | dict[str, np.ndarray], batch: int
) -> np.ndarray:
    """Probabilities from the served model, in requests no larger than its max batch size;
    `features` are float rows, or {input name: rows} (a mixed table's numbers and categories)."""
    from serving.client import INTERNAL_REQUEST_ID as INTERNAL  # not kept in the live sample

    if isinstance(features, dict):
        n = len(next(iter(features.values())))
        parts = [
            client.predict(
                model, {k: v[i : i + batch] for k, v in features.items()}, version=version, request_id=INTERNAL
            )
            for i in range(0, n, batch)
        ]
    else:
        parts = [
            client.predict(model, features[i : i + batch], version=version, request_id=INTERNAL)
            for i in range(0, len(features), batch)
        ]
    return np.concatenate(parts, axis=0)


def score_champion(
    settings: ServingSettings, classes: list, model: str, test: Any
) -> tuple[int, dict[str, Any]] | None:
    """(version, metrics) of the pinned champion for `model` on the test rows; None if nothing is pinned."""
    from pipeline.metrics import scores
    from pipeline.rows import Rows
    from pipeline.transform_onnx import feeds
    from serving.client import TritonClient

    with TritonClient(settings.client) as client:
        version = champion_version(settings.open_repository(), client, model)
        if version is None:
            log.info("no version of %s is pinned or served at %s: first deployment", model, settings.client.describe())
            return None
        batch = served_batch_size(client, model, version) or len(test)
        features = test.x if isinstance(test, Rows) else feeds(test)
        probabilities = champion_probabilities(client, model, version, features, batch)
    metrics = {**scores(test.y, probabilities.argmax(axis=1), len(classes)), "test_rows": len(test)}
    log.info(
        "champion %s v%d at %s on %d test rows (batches of %d): %s",
        model,
        version,
        settings.client.describe(),
        len(test),
        batch,
        metrics,
    )
    return version, metrics


def run(
    args: Any, data: DataParams, serving: ServingSettings, gate: GateParams, tune: TuneParams | None = None
) -> Decision:
    """The gate's decision. Its inputs, given explicitly (it is not a DVC stage): the paths in `args`
    (candidate, clean, split, metrics, drift), the data contract (to read the test rows), where the
    champion serves and the gate's thresholds. The champion is scored in requests of its own served
    max_batch_size, read from the server. The Airflow task calls this in-process and returns the
    decision as its value; the CLI below is for people and scripts."""
    from pipeline.rows import SplitTable
    from serving.repository import load_candidate
    from stages.evaluate import test_rows

    challenger = json.loads(Path(args.metrics).read_text())
    drift = read_drift(getattr(args, "drift", None))
    candidate = load_candidate(args.candidate)
    model = candidate.name
    test = test_rows(SplitTable.open(args.clean, args.split, data))
    champion = score_champion(serving, list(data.classes), model, test)
    privacy = candidate.card.privacy if candidate.card else None
    speed = None
    if champion is not None and gate.speed_allowances != (None, None):  # a first deployment: no champion to compare
        speed = judge_speed(Path(args.candidate), serving, champion[0], gate.speed_allowances, tune or TuneParams())
    decision = decide(challenger, None if champion is None else champion[1], gate, privacy, speed)
    return Decision(
        passed=decision.passed,
        reason=decision.reason,
        checks=decision.checks,
        champion_version=None if champion is None else champion[0],
        model=model,
        extra={"test_rows": len(test), "candidate": str(args.candidate)},
        drift=drift,
        privacy=decision.privacy,
        speed=decision.speed,
    )


def read_drift(path: str | None) -> dict[str, Any] | None:
    """The drift stage's metrics, when the pipeline has a drift stage (shown, never decisive:
    `drift.action: fail` stops the run in the drift stage itself)."""
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise _cli.StageError(f"the drift metrics {path} are unreadable ({error}); rerun the drift stage") from None


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--candidate", required=True, help="candidate folder written by export")
    _cli.add_split_inputs(p)
    p.add_argument("--metrics", required=True, help="the candidate's evaluate metrics (JSON)")
    p.add_argument("--drift", help="the drift stage's metrics (JSON), summarised in the report")
    p.add_argument("--report", help="where to write the gate report (default: gate.report in params)")

    def body(args: Any, params: Any) -> Decision:
        from serving.params import serving_params
        from serving.settings import ServingSettings

        gate = parse_as(GateParams, params.gate, args.params, "gate")
        serving = ServingSettings.from_params(serving_params(params, args.params))
        decision = run(args, params.data, serving, gate, params.tune)
        atomic.write_json(args.report or gate.report, decision.to_json())
        log.info("gate %s\n%s", decision.reason, diff_markdown(decision))
        return decision

    decision = _cli.main("gate", body, p.parse_args())
    if not decision.passed:
        print(f"\ngate {decision.reason}", file=sys.stderr)
        sys.exit(REJECTED_EXIT)


if __name__ == "__main__":
    main()

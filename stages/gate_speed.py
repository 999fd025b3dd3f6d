"""The gate's speed check: the candidate's p99 and rows/s against the champion's, measured in the
same step, the same way as the tune stage measures settings (serving/speed.py: a scratch Triton,
both models loaded side by side, driven alternately at every `tune.concurrency` for `tune.rounds`).

Each figure is a paired ratio: candidate / champion within one round, the median over rounds
(serving/tuning.py `paired_ratio`), so a burst of load elsewhere slows both sides of a ratio
alike. The candidate is refused when, at any concurrency, its p99 ratio is above
1 + `gate.max_latency_regression`, or its rows/s ratio (geometric mean over the concurrencies) is
below 1 - `gate.max_throughput_regression`, or when it failed requests the champion answered.
Both keys are null by default: no speed is measured and the gate behaves as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.params import TuneParams

if TYPE_CHECKING:
    from serving.settings import ServingSettings

log = logging.getLogger(__name__)

CANDIDATE, CHAMPION = "candidate", "champion"


def measure_pair(
    candidate_dir: Path, serving: ServingSettings, champion_version: int, tune: TuneParams
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """The cells of the candidate's Python-backend entry and the stored champion version."""
    from serving.repository import load_candidate, parse_config
    from serving.speed import measure

    candidate = load_candidate(candidate_dir)
    repo = serving.open_repository()
    models = {
        CANDIDATE: (parse_config(candidate.config), candidate.files()),
        CHAMPION: (
            repo.version_config(candidate.name, champion_version),
            repo.version_files(candidate.name, champion_version),
        ),
    }
    return measure(models, candidate.golden, tune, serving.load_timeout_s)


def compare(
    cells: dict[str, dict[int, list[dict[str, Any]]]],
    max_latency_regression: float | None,
    max_throughput_regression: float | None,
) -> dict[str, Any]:
    """The speed part of the gate's report: figures, ratios and the problems (empty: passed), with
    the allowances of gate.max_latency_regression / max_throughput_regression (None: not judged)."""
    from serving.tuning import paired_ratio

    concurrencies = list(cells[CANDIDATE])
    p99_ratio = {
        c: paired_ratio({n: {c: cells[n][c]} for n in cells}, CANDIDATE, CHAMPION, "p99_ms") for c in concurrencies
    }
    rows_ratio = paired_ratio(cells, CANDIDATE, CHAMPION)
    errors = {n: sum(cell["errors"] for rounds in cells[n].values() for cell in rounds) for n in cells}
    problems = []
    if errors[CANDIDATE] and not errors[CHAMPION]:
        problems.append(f"the candidate failed {errors[CANDIDATE]} requests that the champion answered")
    allowed = max_latency_regression
    if allowed is not None:
        for c, ratio in p99_ratio.items():
            if ratio > 1.0 + allowed:
                problems.append(
                    f"p99 at {c} concurrent clients is {ratio:.2f}x the champion's (at most {1 + allowed:.2f}x "
                    "allowed by gate.max_latency_regression)"
                )
    floor = max_throughput_regression
    if floor is not None and rows_ratio < 1.0 - floor:
        problems.append(
            f"rows/s is {rows_ratio:.2f}x the champion's (at least {1 - floor:.2f}x required by "
            "gate.max_throughput_regression)"
        )

    def medians(name: str, key: str) -> dict[str, float]:
        import statistics

        return {str(c): statistics.median(cell[key] for cell in cells[name][c]) for c in concurrencies}

    return {
        "passed": not problems,
        "problems": problems,
        "p99_ratio": {str(c): r for c, r in p99_ratio.items()},
        "rows_ratio": rows_ratio,
        "candidate": {"p99_ms": medians(CANDIDATE, "p99_ms"), "rows_per_s": medians(CANDIDATE, "rows_per_s")},
        "champion": {"p99_ms": medians(CHAMPION, "p99_ms"), "rows_per_s": medians(CHAMPION, "rows_per_s")},
        "errors": errors,
        "rounds": len(cells[CANDIDATE][concurrencies[0]]),
    }


def judge_speed(
    candidate_dir: Path,
    serving: ServingSettings,
    champion_version: int,
    allowances: tuple[float | None, float | None],
    tune: TuneParams,
) -> dict[str, Any]:
    """Measure and compare (see the module's docstring); `allowances` = (gate.max_latency_regression,
    gate.max_throughput_regression)."""
    speed = compare(measure_pair(candidate_dir, serving, champion_version, tune), *allowances)
    log.info("speed against champion v%d: %s", champion_version, speed)
    return speed


def speed_markdown(speed: dict[str, Any]) -> str:
    lines = [
        "| concurrency | candidate p99 ms | champion p99 ms | p99 ratio | candidate rows/s | champion rows/s |",
        "|---|---|---|---|---|---|",
    ]
    for c, ratio in speed["p99_ratio"].items():
        lines.append(
            f"| {c} | {speed['candidate']['p99_ms'][c]:.2f} | {speed['champion']['p99_ms'][c]:.2f} | {ratio:.2f} | "
            f"{speed['candidate']['rows_per_s'][c]:.0f} | {speed['champion']['rows_per_s'][c]:.0f} |"
        )
    lines.append(f"\nrows/s ratio (paired rounds, geometric mean over concurrencies): {speed['rows_ratio']:.2f}")
    return "\n".join(lines)

"""The served config, tuned: the grid of settings, how a setting changes a config, and the rule
that picks one from noisy measurements (pure functions; serving/speed.py measures).

A setting is a few values of the Python-backend entry's config: instances, `max_batch_size`, the
dynamic batcher's queue delay and onnxruntime's threads per instance. The candidate's own setting
(what `export:` rendered) is always measured too: it is the baseline every other one must beat.

The rule, built for a shared 2-core machine where p99 moves 3x from one round to the next:
- every setting is measured in every round, the settings alternating cell by cell (serving/loadgen.py);
- a setting's latency is the median over rounds of its p99 at each concurrency; it is within the
  budget when that median is, at every concurrency, and it answered every request;
- its speed is the median over rounds of the rows/s ratio against the baseline *in the same round*
  (geometric mean over the concurrencies): paired, so a slow round slows both sides of the ratio;
- the fastest setting within the budget replaces the baseline only if its ratio is above
  1 + margin; a baseline over the budget gives way to any setting within it.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from typing import Any

from pipeline.errors import StageError
from pipeline.params import TuneParams
from serving.configs import INTRA_OP_THREADS

KEYS = ("instance_count", "max_batch_size", "max_queue_delay_microseconds", "intra_op_threads")
BASELINE = "candidate"  # the label of the candidate's own setting

Setting = dict[str, int]
Cells = dict[str, dict[int, list[dict[str, Any]]]]  # label -> concurrency -> one cell per round


class TuneError(StageError):
    """The grid or the candidate's config cannot be tuned; the message says what to change."""


def current_setting(config: Any) -> Setting:
    """The tuned keys as a Python-backend `ModelConfig` has them."""
    threads = config.parameters[INTRA_OP_THREADS].string_value if INTRA_OP_THREADS in config.parameters else "0"
    return {
        "instance_count": int(config.instance_group[0].count) if config.instance_group else 1,
        "max_batch_size": int(config.max_batch_size),
        "max_queue_delay_microseconds": int(config.dynamic_batching.max_queue_delay_microseconds),
        "intra_op_threads": int(threads),
    }


def grid(baseline: Setting, tune: TuneParams) -> list[Setting]:
    """The settings to measure: every combination of `tune.grid`'s lists (a key with [] keeps the
    baseline's value), the baseline first and once."""
    values = [getattr(tune.grid, key) or [baseline[key]] for key in KEYS]
    settings = [baseline] + [s for s in (dict(zip(KEYS, combo, strict=True)) for combo in itertools.product(*values))]
    unique = [dict(t) for t in dict.fromkeys(tuple(s.items()) for s in settings)]
    if len(unique) > tune.max_settings:
        raise TuneError(
            f"tune.grid makes {len(unique)} settings (the candidate's own included), more than tune.max_settings "
            f"{tune.max_settings}: each one is a model loaded on the scratch server and measured every round. "
            "Shorten the lists in tune.grid, or raise tune.max_settings"
        )
    return unique


def apply_setting(config: Any, setting: Setting) -> Any:
    """A copy of the `ModelConfig` with `setting`; preferred batch sizes above the new
    max_batch_size are dropped (Triton refuses them)."""
    out = type(config)()
    out.CopyFrom(config)
    out.max_batch_size = setting["max_batch_size"]
    if out.HasField("dynamic_batching"):
        out.dynamic_batching.max_queue_delay_microseconds = setting["max_queue_delay_microseconds"]
        kept = [size for size in out.dynamic_batching.preferred_batch_size if size <= setting["max_batch_size"]]
        out.dynamic_batching.preferred_batch_size[:] = kept
    elif setting["max_queue_delay_microseconds"]:
        raise TuneError(
            "tune.grid sets a queue delay, but the candidate has no dynamic batcher (export.dynamic_batching)"
        )
    if not out.instance_group:
        out.instance_group.add()
    out.instance_group[0].count = setting["instance_count"]
    out.parameters[INTRA_OP_THREADS].string_value = str(setting["intra_op_threads"])
    return out


def label(setting: Setting) -> str:
    return (
        f"instances {setting['instance_count']}, max_batch {setting['max_batch_size']}, "
        f"delay {setting['max_queue_delay_microseconds']} us, threads {setting['intra_op_threads']}"
    )


@dataclass(frozen=True)
class Summary:
    """One setting's figures: medians over rounds at each concurrency, and its paired speed ratio."""

    name: str
    setting: Setting
    p99_ms: dict[int, float]
    rows_per_s: dict[int, float]
    errors: int
    ratio: float  # median over rounds of rows/s / the reference's rows/s in the same round (geometric mean over c)
    within_budget: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "setting": self.setting,
            "p99_ms": {str(c): v for c, v in self.p99_ms.items()},
            "rows_per_s": {str(c): v for c, v in self.rows_per_s.items()},
            "errors": self.errors,
            "rows_ratio": self.ratio,
            "within_budget": self.within_budget,
        }


def paired_ratio(cells: Cells, name: str, reference: str, key: str = "rows_per_s") -> float:
    """Median over rounds of the geometric mean over concurrencies of name's `key` / reference's,
    each ratio taken within one round."""
    concurrencies = list(cells[name])
    rounds = len(cells[name][concurrencies[0]])
    per_round = []
    for r in range(rounds):
        logs = []
        for c in concurrencies:
            ours, theirs = cells[name][c][r][key], cells[reference][c][r][key]
            logs.append(math.log(max(ours, 1e-9) / max(theirs, 1e-9)))
        per_round.append(math.exp(sum(logs) / len(logs)))
    return statistics.median(per_round)


def summarise(cells: Cells, settings: dict[str, Setting], reference: str, budget_ms: float | None) -> list[Summary]:
    out = []
    for name, by_c in cells.items():
        p99 = {c: statistics.median(cell["p99_ms"] for cell in rounds) for c, rounds in by_c.items()}
        rows = {c: statistics.median(cell["rows_per_s"] for cell in rounds) for c, rounds in by_c.items()}
        errors = sum(cell["errors"] for rounds in by_c.values() for cell in rounds)
        ok = errors == 0 and all(not math.isnan(v) and (budget_ms is None or v <= budget_ms) for v in p99.values())
        out.append(Summary(name, settings[name], p99, rows, errors, paired_ratio(cells, name, reference), ok))
    return out


@dataclass(frozen=True)
class Choice:
    name: str
    setting: Setting
    reason: str


def choose(summaries: list[Summary], baseline: str, margin: float) -> Choice:
    """The setting to serve (see the module's docstring for the rule)."""
    by_name = {s.name: s for s in summaries}
    base = by_name[baseline]
    fitting = sorted((s for s in summaries if s.within_budget), key=lambda s: s.ratio, reverse=True)
    if not fitting:
        return Choice(
            base.name,
            base.setting,
            "no setting kept p99 within tune.p99_budget_ms at every concurrency; the candidate's own is kept",
        )
    best = fitting[0]
    if not base.within_budget:
        return Choice(
            best.name,
            best.setting,
            f"the candidate's own setting is over the p99 budget; {label(best.setting)} is within it and the "
            f"fastest that is ({best.ratio:.2f}x the candidate's rows/s)",
        )
    if best.name != base.name and best.ratio > 1.0 + margin:
        return Choice(
            best.name,
            best.setting,
            f"{label(best.setting)}: {best.ratio:.2f}x the candidate's rows/s (median of paired rounds), above "
            f"1 + tune.margin ({1 + margin:.2f}), p99 within the budget",
        )
    return Choice(
        base.name,
        base.setting,
        f"no setting beat the candidate's own by more than tune.margin ({margin:.2f}): best other {best.ratio:.2f}x",
    )


def table_markdown(summaries: list[Summary], chosen: str) -> str:
    """The measured table (the card and the stage's log show it)."""
    concurrencies = list(summaries[0].p99_ms)
    head = " | ".join(f"c={c} rows/s | c={c} p99 ms" for c in concurrencies)
    lines = [f"| setting | {head} | ratio | within budget | chosen |", "|---" * (4 + 2 * len(concurrencies)) + "|"]
    for s in summaries:
        cells = " | ".join(f"{s.rows_per_s[c]:.0f} | {s.p99_ms[c]:.2f}" for c in concurrencies)
        lines.append(
            f"| {label(s.setting)} | {cells} | {s.ratio:.2f} | {'yes' if s.within_budget else 'NO'} | "
            f"{'yes' if s.name == chosen else ''} |"
        )
    return "\n".join(lines)

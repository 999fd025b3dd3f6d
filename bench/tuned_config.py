"""The tuned served config against the default one: rows/s and p99, measured in the same run.

    python bench/tuned_config.py [--candidate models/candidate] [--rounds 5] [--slow-default]

1. Tune: the tune stage's own core (stages/tune.py `tune_config`) measures the candidate's config
   and every setting of params.yaml `tune.grid` on a scratch Triton, and picks one.
2. Confirm: the candidate's default config and the tuned one are loaded again on a fresh scratch
   server and driven alternately for `--rounds` rounds (serving/speed.py, the gate's way). A figure
   from the selection itself would flatter the winner (it won partly by luck); this one is fresh.

Prints the tuned/default ratio of rows/s (median of paired rounds) and the medians of p99 at each
of tune.concurrency. Without models/candidate the toy model of devtools/toy.py stands in.
`--slow-default` exports that candidate with a 20 ms queue delay, the case tuning exists for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.toy import build_candidate  # noqa: E402
from pipeline.params import ExportParams, load_params  # noqa: E402
from serving.repository import load_candidate, parse_config  # noqa: E402
from serving.speed import measure  # noqa: E402
from serving.tuning import current_setting, label, paired_ratio  # noqa: E402
from stages.tune import tune_config  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidate", default="models/candidate", help="exported candidate (the toy model if missing)")
    p.add_argument("--params", default=str(ROOT / "params.yaml"), help="params whose tune: section is used")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the confirming measurement")
    p.add_argument("--slow-default", action="store_true", help="the toy candidate with a 20 ms queue delay")
    args = p.parse_args()

    params = load_params(args.params)
    tune = params.tune.model_copy(update={"enabled": True})
    scratch = Path(tempfile.mkdtemp(prefix="tuned-bench-"))
    candidate = Path(args.candidate)
    if not (candidate / "golden.json").exists() or args.slow_default:
        export = params.export
        if args.slow_default:
            export = export.model_copy(update={"max_queue_delay_microseconds": 20_000})
        print("candidate: devtools/toy.py's model (64 features, 10 classes)")
        candidate = build_candidate(
            scratch / "toy", name="toy", export=ExportParams.model_validate(export.model_dump())
        )
    default = parse_config(load_candidate(candidate).config)
    tuned_text, record = tune_config(candidate, tune)
    tuned = parse_config(tuned_text)
    print(f"default: {label(current_setting(default))}")
    print(f"tuned:   {label(current_setting(tuned))}  ({record['reason']})")
    print(record["table_markdown"])

    files = load_candidate(candidate).files()
    confirm = tune.model_copy(update={"rounds": args.rounds})
    cells = measure(
        {"default": (default, files), "tuned": (tuned, files)}, load_candidate(candidate).golden, confirm, 120.0
    )
    ratio = paired_ratio(cells, "tuned", "default")
    print(f"\nconfirming run, {args.rounds} alternated rounds, medians:")
    figures = {}
    for c in tune.concurrency:
        row = {n: {k: statistics.median(x[k] for x in cells[n][c]) for k in ("rows_per_s", "p99_ms")} for n in cells}
        figures[c] = row
        print(
            f"  c={c:<3} rows/s default {row['default']['rows_per_s']:8.0f}  tuned {row['tuned']['rows_per_s']:8.0f}   "
            f"p99 ms default {row['default']['p99_ms']:7.2f}  tuned {row['tuned']['p99_ms']:7.2f}"
        )
    print(f"tuned / default rows/s (median of paired rounds, geometric mean over concurrencies): {ratio:.2f}")
    print("The machine may be shared: compare ratios measured in the same run, not absolute figures across runs.")
    print(json.dumps({"ratio": ratio, "figures": figures, "tuned": record["chosen"]}))


if __name__ == "__main__":
    main()

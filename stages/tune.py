"""tune: the candidate's served config, measured on a scratch Triton across a grid of settings

The tuned candidate (`--out`, models/tuned) is a copy of the candidate (`--candidate`, what export
wrote) whose Python-backend entry's `config.pbtxt` holds the setting with the most rows/s whose p99
stays within `tune.p99_budget_ms` (serving/tuning.py has the rule; serving/speed.py measures), and
whose model card holds the measured table under `tuning`. With `tune.enabled: false` (the default)
it is a plain copy, its card saying tuning was off. The model files are never changed, only how the
server runs them, so evaluate's figures hold for both folders.

The GPU entries (gpu/) keep export's settings: this stage measures on the local CPU server, which
says nothing about a GPU.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.candidate import CARD_FILE, CONFIG_FILE
from pipeline.params import TuneParams
from stages import _cli

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 120.0  # one setting's load on the scratch server (a Python stub starting onnxruntime)


def tune_config(candidate_dir: Path, tune: TuneParams) -> tuple[str, dict[str, Any]]:
    """(the tuned config text of the candidate's Python-backend entry, the card's `tuning` record)."""
    from serving.configs import check_config
    from serving.repository import config_text, load_candidate, parse_config
    from serving.speed import measure
    from serving.tuning import BASELINE, apply_setting, choose, current_setting, grid, summarise, table_markdown

    candidate = load_candidate(candidate_dir)
    config = parse_config(candidate.config)
    baseline = current_setting(config)
    settings = {BASELINE: baseline, **{f"setting-{k}": s for k, s in enumerate(grid(baseline, tune)[1:], 1)}}
    files = candidate.files()
    models = {name: (apply_setting(config, setting), files) for name, setting in settings.items()}
    cells = measure(models, candidate.golden, tune, LOAD_TIMEOUT_S)
    summaries = summarise(cells, settings, BASELINE, tune.p99_budget_ms)
    choice = choose(summaries, BASELINE, tune.margin)
    table = table_markdown(summaries, choice.name)
    log.info("tuned %s: %s\n%s", candidate.name, choice.reason, table)
    text = config_text(apply_setting(config, choice.setting))
    check_config(text, source=f"the tuned {CONFIG_FILE}")
    record = {
        "enabled": True,
        "chosen": choice.setting,
        "changed": choice.setting != baseline,
        "reason": choice.reason,
        "load": tune.model_dump(exclude={"enabled", "grid"}),
        "measured": [s.to_json() for s in summaries],
        "table_markdown": table,
    }
    return text, record


def run(candidate_dir: Path, out: Path, tune: TuneParams) -> dict[str, Any]:
    """Write the tuned copy of `candidate_dir` into the empty folder `out`; returns the card's record."""
    from serving.repository import load_candidate

    shutil.copytree(candidate_dir, out, dirs_exist_ok=True)
    if tune.enabled:
        text, record = tune_config(candidate_dir, tune)
        (load_candidate(out).model_dir / CONFIG_FILE).write_text(text)
    else:
        record = {"enabled": False, "reason": "tune.enabled is false: export's settings are served as they are"}
    card = json.loads((out / CARD_FILE).read_text())
    card["tuning"] = record
    atomic.write_json(out / CARD_FILE, card)
    return record


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--candidate", required=True, help="candidate folder written by export")
    p.add_argument("--out", required=True, help="tuned candidate folder to write (replaced atomically)")

    def body(args: Any, params: Any) -> None:
        with atomic.atomic_dir(args.out) as tmp:
            run(Path(args.candidate), Path(tmp), params.tune)

    _cli.main("tune", body, p.parse_args())


if __name__ == "__main__":
    main()

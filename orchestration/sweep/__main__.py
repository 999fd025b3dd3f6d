"""`python -m orchestration.sweep run|show [--params params.yaml]`: the sweep on this machine.

run   plan the study, run its trials `sweep.parallel` at a time (each a DVC experiment in its own
      temporary clone), print the trials and write the best one's values into params.yaml
show  the study's trials (the one the current params.yaml and dvc.lock key)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from orchestration.params import load_project_params
from orchestration.sweep import study as studies
from orchestration.sweep import winner
from orchestration.sweep.local import format_table, run_local
from pipeline.errors import StageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "show"])
    parser.add_argument(
        "--params", default="params.yaml", help="params.yaml of the project (its folder is the project)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params_path = Path(args.params).resolve()
    project = params_path.parent
    try:
        sweep = load_project_params(params_path).sweep
        if args.command == "run":
            run_local(project, params_path.name)
        url = studies.storage_url(sweep, project)
        name = studies.study_name(sweep, studies.data_key(project))
        print(f"study {name} ({url})")
        print(format_table(winner.trials_table(sweep, url, name), sweep.objective.metric))
    except StageError as error:
        print(f"sweep {args.command} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

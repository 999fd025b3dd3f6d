"""`python -m devtools`: the project on this machine, for people.

python -m devtools run-once [--date YYYY-MM-DD]   # make run: one retrain cycle through Airflow, then what serves
python -m devtools ui                               # make airflow: airflow standalone (UI on 127.0.0.1:8080)
python -m devtools registry                         # the model registry: versions, what is in prod
python -m devtools results                          # the published version's metrics and reports
python -m devtools rollback [--to N]                # Triton serves version N again; #prod moves with it
python -m devtools pin                              # list an s3:// data.source into source.pin.json
python -m devtools cluster up|down|status           # make cluster: a CeleryExecutor cluster on 127.0.0.1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from devtools import local, results


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m devtools", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="project root (default: the current folder)")
    commands = parser.add_subparsers(dest="command", required=True)
    once = commands.add_parser("run-once", help="one retrain cycle through Airflow, then print what serves")
    once.add_argument(
        "--date", help="the demo data's date YYYY-MM-DD (default: the newest batch); the run itself is dated now"
    )
    commands.add_parser("ui", help="Airflow with the web UI (airflow standalone)")
    commands.add_parser("registry", help="the model registry on the workspace's git remote (gto show)")
    commands.add_parser("results", help="check out the published version's metrics and reports in .airflow/results")
    back = commands.add_parser("rollback", help="serve an earlier version again and move the registry's stage to it")
    back.add_argument("--to", type=int, help="version to serve (default: the one before the serving one)")
    commands.add_parser(
        "pin", help="list data.source (an s3:// prefix) into source.pin.json and point data.source at it"
    )
    cluster = commands.add_parser("cluster", help="a local CeleryExecutor cluster: up | down | status", add_help=False)
    cluster.add_argument("cluster_args", nargs=argparse.REMAINDER)
    args, unknown = parser.parse_known_args(argv)  # `cluster` takes its own options (and --help)
    if unknown and args.command != "cluster":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    project = Path(args.project).resolve()
    os.chdir(project)  # params.yaml's relative paths (the Triton repository) are relative to it
    if args.command == "run-once":
        sys.exit(local.run_once(project, args.date))
    if args.command == "registry":
        local.print_registry(project)
        return
    if args.command == "results":
        sys.exit(results.show(project))
    if args.command == "rollback":
        sys.exit(local.rollback(project, args.to))
    if args.command == "pin":
        from orchestration.pinning import pin_checkout

        pinned = pin_checkout(project)
        print(json.dumps(pinned) if pinned else "data.source is a local path: DVC versions it as it is; nothing to pin")
        return
    if args.command == "cluster":
        from devtools.cluster.commands import main as cluster_main

        sys.exit(cluster_main(project, [*unknown, *args.cluster_args]))
    local.ui(project)

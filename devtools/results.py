"""What a person wants to see after a run on this machine (`make run`, `python -m devtools
results`): the gate's metric table (champion vs candidate), where every report is, and what serves.

The tasks worked in worker-local checkouts, so the project's own checkout holds none of the run's
outputs. The published version is on the workspace's git remote and the DVC remote; this module
checks it out into `.airflow/results` (a plain git + DVC checkout, replaced each time) and pulls the
small outputs there: metrics, plots and reports. `dvc metrics show` and `dvc plots show` then work in
that folder as written.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from subprocess import PIPE
from typing import Any

from orchestration import dvc_runner, workspace
from orchestration.steps import Fleet
from pipeline.errors import StageError

log = logging.getLogger(__name__)

RESULTS_DIR = ".airflow/results"
# Output folders worth pulling for a person: reports, metrics and training curves, not data or models.
SHOWN_ROOTS = ("reports", "metrics", "dvclive")


def shown_outputs(fleet: Fleet) -> list[str]:
    """Every output of dvc.yaml under reports/, metrics/ or dvclive/, in stage order."""
    return [out for stage in fleet.graph.stages.values() for out in stage.outs if out.split("/", 1)[0] in SHOWN_ROOTS]


def check_out_published(fleet: Fleet, root: Path) -> str:
    """A fresh checkout of the published branch in `root`, its shown outputs pulled; returns the
    version tag of its commit (or the commit)."""
    ws = fleet.ws
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    env = ws.git_env()
    workspace.run(["git", "init", "-q"], root, env=env)
    workspace.run(["git", "fetch", "-q", "--tags", ws.git_remote, f"refs/heads/{ws.params.git_branch}"], root, env=env)
    workspace.run(["git", "checkout", "-q", "-B", ws.params.git_branch, "FETCH_HEAD"], root, env=env)
    described = workspace.run(
        ["git", "describe", "--tags", "--exact-match", "--match", f"{ws.params.tag_prefix}*", "HEAD"],
        root,
        env=env,
        check=False,
    ).strip()
    dvc_runner.pull_outputs(root, shown_outputs(fleet), fleet.dvc)
    return described or workspace.run(["git", "rev-parse", "--short", "HEAD"], root).strip()


def gate_reports(fleet: Fleet, run_id: str | None) -> list[Path]:
    """The gate's report(s) of `run_id` on this worker: the gate wrote it in its own checkout."""
    if run_id is None:
        return []
    runs = fleet.ws.worker_root / "runs" / workspace.safe_run_key(run_id)
    return sorted(runs.glob("gate*/reports/gate.json"))


def dvc(root: Path, *commands: Sequence[str]) -> list[str]:
    """The output of each DVC command in `root`, all started at once (starting DVC is most of each
    one's time); a failed one says so in its place."""
    started = [
        (args, subprocess.Popen(workspace.dvc_command(*args), cwd=root, stdout=PIPE, stderr=PIPE, text=True))
        for args in commands
    ]
    outputs = []
    for args, process in started:
        out, err = process.communicate()
        outputs.append(out if process.returncode == 0 else f"(dvc {' '.join(args)} failed: {err.strip()})")
    return outputs


def metrics_lines(shown: str, width: int = 110) -> list[str]:
    """`dvc metrics show --json` as a few lines per metrics file (`key=value`, nested keys dotted,
    numbers to 4 significant digits), wrapped to `width`: DVC's own table has a column per key of
    every file, about 150 for this pipeline, too wide to read in a terminal."""
    try:
        workspaces = json.loads(shown)
    except ValueError:
        return [f"  {shown.strip()}"]  # a failed command says so in its place
    workspace: dict[str, Any] = next(iter(workspaces.values()), {})
    lines: list[str] = []
    for path, entry in workspace.get("data", {}).items():
        pairs = [f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in _flat(entry)]
        lines += textwrap.wrap(
            "  ".join(pairs) or "(no metrics)",
            width,
            initial_indent=f"  {path:<28} ",
            subsequent_indent=" " * 31,
            break_long_words=False,
            break_on_hyphens=False,
        )
    return lines


def _flat(entry: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    data = entry.get("data", entry) if not prefix else entry
    pairs: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            pairs += _flat(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def report_lines(root: Path, outputs: Sequence[str], gate: Path | None) -> list[str]:
    """Where each report is, as paths a person can open from the project folder."""
    lines = []
    for out in outputs:
        path = root / out
        if path.is_file() and path.suffix in (".html", ".csv", ".json") and out.startswith("reports/"):
            lines.append(f"  {out:<28} {path}")
    curves = root / "dvclive" / "train" / "plots"
    if curves.is_dir():
        lines.append(f"  {'training curves':<28} {curves}")
    if gate is not None:
        lines.append(f"  {'gate decision':<28} {gate}")
    return lines


def show(project: Path, run_id: str | None = None) -> int:
    """Print the gate's table, the reports and how to look further; 1 when nothing is published."""
    fleet = Fleet.resolve(project)
    gates = gate_reports(fleet, run_id)
    if gates:
        report = json.loads(gates[-1].read_text())
        print(f"\ngate: {report.get('reason', '?')}")
        print(report.get("diff_markdown", ""))
    root = project / RESULTS_DIR
    try:
        version = check_out_published(fleet, root)
    except StageError as error:
        print(f"\nno published version to show yet: {error}", file=sys.stderr)
        return 1
    relative = root.relative_to(project)
    print(f"\nThe published version {version}, checked out with its metrics and reports in {relative}/:")
    metrics, plots = dvc(root, ("metrics", "show", "--json"), ("plots", "show", "-o", "dvc_plots"))
    print("\nmetrics:")
    for line in metrics_lines(metrics):
        print(line)
    index = root / "dvc_plots" / "index.html"
    print("\nreports:")
    for line in report_lines(root, shown_outputs(fleet), gates[-1] if gates else None):
        print(line)
    if index.is_file():
        print(f"  {'plots (dvc plots show)':<28} {index}")
    elif plots.startswith("(dvc"):
        print(f"  plots: {plots}")
    print(
        f"\nMore: source .venv/bin/activate && cd {relative} && dvc metrics show   (or dvc plots show, dvc params diff);\n"
        "      python -m serving status   (in the project: what Triton serves, with live counters)"
    )
    return 0

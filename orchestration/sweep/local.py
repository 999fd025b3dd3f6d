"""The sweep on this machine: plan, run the trials `sweep.parallel` at a time, each in its own
temporary git clone of the project, then write the winner's values into the project's params.yaml.

Each clone is the project's HEAD with the project's working files laid over it (its current
params.yaml, dvc.lock and sources, as `dvc exp run` in the project would see them), its DVC cache
set to the project's: the train inputs are checked out from that cache (`dvc checkout
data/clean.parquet data/split.parquet`, no copy over a network), and what a trial trains lands in
it too. Each trial's experiment is pushed back into the project's git repository
(`dvc exp push <project> <name>`), so `dvc exp show` in the project lists every trial.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from orchestration.params import load_project_params
from orchestration.sweep import study as studies
from orchestration.sweep import winner
from orchestration.sweep.study import TrialSpec
from orchestration.sweep.trial import run_trial
from orchestration.workspace import dvc_command, run, split_author, sync, tool_env

log = logging.getLogger(__name__)


def git_identity(project: Path, author: str) -> dict[str, str]:
    """The environment for the trials' git commits: the person's git identity when git has one,
    else `airflow.git_author`."""
    env = dict(os.environ)
    configured = subprocess.run(["git", "config", "user.email"], cwd=project, capture_output=True, text=True)
    if configured.returncode == 0 and configured.stdout.strip() or env.get("GIT_AUTHOR_EMAIL"):
        return env
    name, email = split_author(author)
    return {
        **env,
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def cache_dir(project: Path) -> Path:
    """The project's DVC cache folder (`dvc cache dir`)."""
    return Path(run(dvc_command("cache", "dir"), project, tool_env()).strip())


def prepare_clone(project: Path, target: Path, cache: Path, env: Mapping[str, str]) -> Path:
    """A clone of the project's HEAD with its working files laid over it and the train inputs
    checked out of the project's DVC cache."""
    run(["git", "clone", "--quiet", "--no-hardlinks", str(project), str(target)], project.parent, env)
    sync(project, target, None)
    if (project / "dvc.lock").exists():
        shutil.copyfile(project / "dvc.lock", target / "dvc.lock")
    run(dvc_command("cache", "dir", "--local", str(cache)), target, tool_env(env))
    run(dvc_command("checkout", "--quiet", *studies.train_inputs(target)), target, tool_env(env))
    return target


def run_local(project: str | Path, params_path: str | Path = "params.yaml") -> list[dict[str, Any]]:
    """Plan and run the sweep of `params_path` in the project; write the winner into params_path.
    Returns each trial's result (the planned ones); raises SweepFailed when none of the study's
    trials completed."""
    project = Path(project).resolve()
    params_path = project / params_path
    params = load_project_params(params_path)
    sweep = params.sweep
    url = studies.storage_url(sweep, project)
    key = studies.data_key(project)
    specs = studies.plan(sweep, url, key)
    name = studies.study_name(sweep, key)
    env = git_identity(project, params.airflow.git_author)
    cache = cache_dir(project)
    log.info("sweep %s: %d trial(s) to run, %d at a time", name, len(specs), sweep.parallel)

    def one(spec: TrialSpec) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix=f"{name}-t{spec['number']}-") as scratch:
            clone = prepare_clone(project, Path(scratch) / "checkout", cache, env)
            return run_trial(clone, spec, sweep, url, git_remote=str(project), env=env)

    with ThreadPoolExecutor(max_workers=sweep.parallel) as pool:
        results = list(pool.map(one, specs))
    best = winner.best(sweep, url, name)
    winner.write_winner(params_path, best["params"])
    log.info(
        "sweep %s: trial %d won (%s %.4f); its values are in %s",
        name,
        best["number"],
        sweep.objective.metric,
        best["value"],
        params_path,
    )
    return results


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    """The trials as a plain text table: number, state, objective value, params."""
    lines = [f"{'trial':>5}  {'state':<8}  {metric:>18}  params"]
    for row in rows:
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        params = ", ".join(f"{key.removeprefix('train.')}={val}" for key, val in row["params"].items())
        lines.append(f"{row['number']:>5}  {row['state']:<8}  {value:>18}  {params}")
    return "\n".join(lines)

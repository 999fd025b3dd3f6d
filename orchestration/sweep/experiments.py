"""A trial's DVC experiment when `dvc exp run` did not make it (a pruned or failed trial), and the
push of any trial's experiment to a git remote."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from orchestration import lockfile
from orchestration.dvc_graph import read_graph
from orchestration.workspace import dvc_command, tool_env
from pipeline import atomic

STAGE = "train"  # the stage each trial runs


def save_unfinished(root: Path, name: str, summary: Path, env: Mapping[str, str]) -> None:
    """Record a pruned or failed trial as an experiment: its params and what metrics it logged.
    The train stage did not finish, so its dvc.lock entry (the base's) is dropped: the experiment
    claims no model. `dvc exp save` caches the stages before train (their outputs are in place)."""
    stages = lockfile.read(root)
    if STAGE in stages:
        del stages[STAGE]
        atomic.write_text(root / "dvc.lock", lockfile.dump(stages))
    targets = sorted(read_graph(root).reduced_upstream(STAGE))
    extra = ["--include-untracked", str(summary.relative_to(root))] if summary.exists() else []
    done = subprocess.run(
        dvc_command("exp", "save", "--force", "--name", name, *extra, *targets),
        cwd=root,
        env=tool_env(env),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"`dvc exp save --name {name}` failed:\n{done.stdout}{done.stderr}")


def _has_dvc_remote(root: Path, env: Mapping[str, str]) -> bool:
    done = subprocess.run(dvc_command("remote", "default"), cwd=root, env=tool_env(env), capture_output=True, text=True)
    return done.returncode == 0 and bool(done.stdout.strip())


def push_experiment(root: Path, git_remote: str, name: str, env: Mapping[str, str] | None = None) -> None:
    """`dvc exp push <git_remote> <name>`: the experiment's ref to the git remote, its outputs to the
    checkout's default DVC remote (none configured: the ref alone)."""
    env = os.environ if env is None else env
    cache = [] if _has_dvc_remote(root, env) else ["--no-cache"]
    done = subprocess.run(
        dvc_command("exp", "push", "--force", *cache, git_remote, name),
        cwd=root,
        env=tool_env(env),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"`dvc exp push {git_remote} {name}` failed:\n{done.stdout}{done.stderr}")

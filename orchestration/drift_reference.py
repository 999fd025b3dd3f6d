"""The drift stage's reference: the profile of the data the served model was trained on.

The drift stage (`airflow.drift_stage` in dvc.yaml) reads a git-tracked `--reference` and writes
the clean table's `--profile` (a DVC output). When a run publishes version N, publish makes that
run's profile the reference, in a commit of its own *after* the `model-v<N>` commit, with the
drift stage brought up to date against it (its dvc.lock entry and outputs): the tag keeps the
reference the run was compared with, the published branch (where the next run starts) compares
with version N's data, and both are consistent (`dvc status` is clean at either), so a next run
on unchanged data runs nothing. The workspace owns the file from then on: prepare copies the
project's (the "no reference yet" one the project ships) only while the workspace has none.
A rollback to version N makes version N's profile the reference again, the same way
(`orchestration.steps.rollback_reference`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from orchestration.dvc_graph import StageGraph

log = logging.getLogger(__name__)


class DriftStageError(ValueError):
    """airflow.drift_stage names a stage that dvc.yaml lacks, or one without the arguments needed."""


@dataclass(frozen=True)
class DriftPaths:
    stage: str  # its name in dvc.yaml
    metrics: str  # what the gate summarises
    profile: str  # this run's data profile (a DVC output)
    reference: str  # the git-tracked reference the stage compares with
    # The served version's novelty file (the drift stage's --novelty, git-tracked like the
    # reference) and the run's own (the file another stage reads with --novelty: export's).
    novelty: str | None = None
    novelty_source: str | None = None

    @property
    def owned(self) -> list[str]:
        """The git-tracked files publish writes (the workspace keeps them across runs)."""
        return [self.reference, *([self.novelty] if self.novelty else [])]

    def sources(self, root: Path) -> list[str]:
        """The run's outputs a reference is made of, among those the checkout's dvc.lock records
        (a version published before the novelty stage existed has no novelty file)."""
        locked = (root / "dvc.lock").read_text() if (root / "dvc.lock").exists() else ""
        extra = [self.novelty_source] if self.novelty and self.novelty_source else []
        return [self.profile, *(path for path in extra if f"path: {path}" in locked)]


def drift_paths(graph: StageGraph, stage: str | None, strict: bool = True) -> DriftPaths | None:
    """The drift stage's paths, from its command in dvc.yaml; None when `stage` is None (or, not
    `strict`, when dvc.yaml has no such stage: a pipeline without drift)."""
    if stage is None:
        return None
    if stage not in graph.stages:
        if strict:
            raise DriftStageError(f"airflow.drift_stage: dvc.yaml has no stage {stage!r} (null = no drift stage)")
        return None
    args = graph.stages[stage].cli_args()
    missing = [f"--{k}" for k in ("metrics", "profile", "reference") if k not in args]
    if missing:
        raise DriftStageError(f"airflow.drift_stage {stage!r}: its cmd has no {missing}")
    novelty = args.get("novelty")
    source = next(
        (
            other.cli_args()["novelty"]
            for name, other in graph.stages.items()
            if name != stage and "novelty" in other.cli_args()
        ),
        None,
    )
    return DriftPaths(
        stage=stage,
        metrics=args["metrics"],
        profile=args["profile"],
        reference=args["reference"],
        novelty=novelty,
        novelty_source=source if novelty else None,
    )


def write_reference(root: Path, paths: DriftPaths, tag: str, source: Path | None = None) -> bool:
    """Make the run's profile (and novelty file), pulled already into the checkout `root` or into
    the checkout `source` of version `tag`, the reference, naming the version `tag`; False when
    the reference holds exactly that already."""
    from pipeline import atomic

    source = source or root
    profile = json.loads((source / paths.profile).read_text())
    text = json.dumps({"profile": profile, "tag": tag}, indent=2, sort_keys=True) + "\n"
    target = root / paths.reference
    changed = not (target.is_file() and target.read_text() == text)
    if changed:
        atomic.write_text(target, text)
    if paths.novelty and paths.novelty_source and (source / paths.novelty_source).is_file():
        data, kept = (source / paths.novelty_source).read_bytes(), root / paths.novelty
        if not (kept.is_file() and kept.read_bytes() == data):
            atomic.write_bytes(kept, data)
            changed = True
    return changed


def commit_reference(root: Path, paths: DriftPaths, tag: str, env: dict[str, str]) -> str:
    """Commit the reference and dvc.lock (with the drift stage's entry against it) on top of the
    checkout's HEAD (the tagged version); returns the new commit."""
    from orchestration.workspace import run

    run(["git", "add", *paths.owned, "dvc.lock"], root, env=env)
    run(["git", "commit", "-q", "-m", f"drift reference: the data {tag} was trained on"], root, env=env)
    commit = run(["git", "rev-parse", "HEAD"], root).strip()
    log.info("drift reference %s := the profile of %s's data (commit %s)", paths.reference, tag, commit[:12])
    return commit


def main(argv: list[str] | None = None) -> None:
    """`python -m orchestration.drift_reference accept [--tag NAME]`: in a checkout, make the
    last `dvc repro`'s data profile the reference (what publish does for the DAG's workspace)."""
    import argparse

    from orchestration.dvc_graph import read_graph
    from orchestration.params import load_project_params

    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0] if main.__doc__ else None)
    p.add_argument("command", choices=["accept"])
    p.add_argument("--tag", default="local", help="what the reference is the data of (default: %(default)s)")
    args = p.parse_args(argv)
    root = Path.cwd()
    paths = drift_paths(read_graph(root), load_project_params(root / "params.yaml").airflow.drift_stage)
    if paths is None:
        raise SystemExit("airflow.drift_stage is null: this pipeline has no drift stage")
    if not (root / paths.profile).is_file():
        raise SystemExit(f"{paths.profile} does not exist: run `dvc repro {paths.profile}` first")
    changed = write_reference(root, paths, args.tag)
    print(f"{paths.reference}: {'now' if changed else 'already'} the profile in {paths.profile} (tag {args.tag!r})")


if __name__ == "__main__":
    main()

"""The workspace the retraining DAG runs DVC in, and the git/DVC bookkeeping after a push.

The workspace is a git repository of its own (`airflow.workspace`, an ignored folder by default),
never the checkout a person works in, so a scheduled run cannot commit into someone's branch or
trip over their uncommitted edits. Each run:

1. syncs the project's source files into it (what git would track: `git ls-files -co
   --exclude-standard`), except `dvc.lock`, which belongs to the workspace: it records what the
   workspace last built, so DVC can tell what is unchanged;
2. writes `embed.as_of` into the workspace's `params.yaml` (demo mode), a one-line edit that keeps
   the comments, and commits the sources when they changed (so the model card's commit names them);
3. runs each stage there (`orchestration.dvc_runner`);
4. after a successful push, `dvc push`es the outputs and commits `dvc.lock`, the params and the
   code that built the model, tagged `<tag_prefix><Triton version>`.

Outputs stay in the workspace between runs, so a stage whose inputs did not change is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline import atomic
from pipeline.params import AirflowParams, load_params, parse_params

log = logging.getLogger(__name__)

WORKSPACE_ENV = "RETRAIN_WORKSPACE"  # overrides airflow.workspace
REMOTE_ENV = "RETRAIN_DVC_REMOTE"  # overrides airflow.dvc_remote
REMOTE_NAME = "retrain"
OWNED = ("dvc.lock", ".dvc/config.local")  # never copied from the project: the workspace's own
SKIPPED_DIRS = (".dvc/tmp/", ".dvc/cache/", ".git/")
MANIFEST = "retrain-synced.json"  # kept inside .git/, so it is never committed


class WorkspaceError(RuntimeError):
    """A git or DVC command in the workspace failed; the message has its output."""


@dataclass(frozen=True)
class Workspace:
    project: Path  # the source checkout (where params.yaml and dvc.yaml are edited)
    root: Path  # the workspace git repository
    params: AirflowParams

    @classmethod
    def resolve(cls, project: str | Path, env: Mapping[str, str] | None = None) -> Workspace:
        env = os.environ if env is None else env
        project = Path(project).resolve()
        params = load_params(project / "params.yaml").airflow
        root = Path(env.get(WORKSPACE_ENV) or params.workspace)
        return cls(project=project, root=(project / root).resolve(), params=params)

    @property
    def remote_url(self) -> str | None:
        url = os.environ.get(REMOTE_ENV) or self.params.dvc_remote
        if url is None or "://" in url:
            return url
        return str((self.project / url).resolve())

    def git_env(self) -> dict[str, str]:
        """Author and committer from params: commits work where git has no identity configured."""
        name, email = re.fullmatch(r"(.+?) <(.+)>", self.params.git_author).groups()
        return {
            **os.environ,
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }


def run(cmd: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None, check: bool = True) -> str:
    result = subprocess.run(list(cmd), cwd=cwd, env=dict(env or os.environ), capture_output=True, text=True)
    if check and result.returncode:
        raise WorkspaceError(
            f"`{' '.join(cmd)}` failed in {cwd} (exit {result.returncode}):\n{result.stdout}{result.stderr}".strip()
        )
    return result.stdout


def dvc_command(*args: str) -> list[str]:
    """DVC from the interpreter running this code, whatever PATH says."""
    return [sys.executable, "-m", "dvc", *args]


def tool_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """This virtualenv's bin first on PATH: the stage commands say `python -m stages...`."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


# --- sync -------------------------------------------------------------------------------------
def source_files(project: Path) -> list[str]:
    """What the project's git would track (tracked + untracked, minus ignored), as relative paths."""
    if (project / ".git").exists():
        listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], project).split("\0")
    else:  # a plain copy of the project: take everything but the usual local folders
        skip = {".git", ".venv", ".airflow", ".triton", ".dvc-remote", "__pycache__"}
        listed = [
            p.relative_to(project).as_posix()
            for p in project.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(project).parts)
        ]
    return sorted(
        {
            name
            for name in listed
            if name
            and name not in OWNED
            and not name.startswith(SKIPPED_DIRS)
            and "__pycache__" not in name
            and (project / name).is_file()
        }
    )


def set_param(text: str, section: str, key: str, value: str | None) -> str:
    """Set `section.key` in params.yaml text by editing its one line, so every comment survives."""
    lines = text.splitlines(keepends=True)
    rendered = "null" if value is None else json.dumps(value)
    in_section = False
    for i, line in enumerate(lines):
        if re.match(rf"^{re.escape(section)}:\s*(#.*)?$", line):
            in_section = True
            continue
        if in_section and re.match(r"^\S", line):
            break
        match = re.match(rf"^(\s+{re.escape(key)}:\s*)([^#\n]*?)(\s*#.*)?(\n?)$", line) if in_section else None
        if match:
            lead, old, comment, end = match.groups()
            pad = max(len(old) - len(rendered), 1) if comment else 0
            lines[i] = f"{lead}{rendered}{' ' * pad if comment else ''}{comment or ''}{end}"
            return "".join(lines)
    raise ValueError(f"params.yaml has no `{section}.{key}` line to set")


def _copy_if_changed(src: Path, dst: Path) -> bool:
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return True


def sync(ws: Workspace, as_of: str | None) -> dict[str, Any]:
    """Mirror the project's sources into the workspace; set `embed.as_of` when given."""
    root = ws.root
    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".git").exists():
        run(["git", "init", "-q"], root)
        log.info("created workspace repository %s", root)
    files = source_files(ws.project)
    # params.yaml is written below, with the run's own values.
    changed = [name for name in files if name != "params.yaml" and _copy_if_changed(ws.project / name, root / name)]
    manifest = root / ".git" / MANIFEST
    previous = set(json.loads(manifest.read_text())) if manifest.exists() else set()
    removed = sorted(previous - set(files))
    for name in removed:
        (root / name).unlink(missing_ok=True)
    atomic.write_text(manifest, json.dumps(files))

    params_path = root / "params.yaml"
    text = (ws.project / "params.yaml").read_text()
    if as_of is not None:
        text = set_param(text, "embed", "as_of", as_of)
        checked = parse_params(yaml.safe_load(text), "workspace params.yaml")
        assert checked.embed.as_of == as_of, "set_param wrote the wrong line"
    if not params_path.exists() or params_path.read_text() != text:
        atomic.write_text(params_path, text)
        changed.append("params.yaml")

    if ws.remote_url is not None:
        run(dvc_command("remote", "add", "--local", "--default", "--force", REMOTE_NAME, ws.remote_url), root)
    commit = source_commit(ws.project)
    if run(["git", "status", "--porcelain"], root).strip():
        # Commit what this run builds from, so that the model card's git commit (written by
        # export) names these exact sources and params. (DVCLive also refuses an empty repository.)
        env = ws.git_env()
        run(["git", "add", "-A"], root, env=env)
        message = f"workspace: sources for embed.as_of={as_of} (project {commit})"
        run(["git", "commit", "-q", "-m", message], root, env=env)
    log.info(
        "workspace %s: %d source files, %d changed, %d removed; embed.as_of=%s",
        root,
        len(files),
        len(changed),
        len(removed),
        as_of,
    )
    return {
        "workspace": str(root),
        "as_of": as_of,
        "changed": sorted(changed)[:50],
        "removed": removed[:50],
        "source_commit": commit,
    }


def source_commit(project: Path) -> str | None:
    """The project's HEAD, with `+dirty` when its working tree differs from it."""
    if not (project / ".git").exists():
        return None
    head = run(["git", "rev-parse", "--short=12", "HEAD"], project, check=False).strip() or None
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], project, check=False).strip()
    return f"{head}+dirty" if head and dirty else head


# --- publish ----------------------------------------------------------------------------------
def tag_commit(root: Path, tag: str) -> str | None:
    out = run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}"], root, check=False).strip()
    return out or None


def publish(ws: Workspace, version: int, model: str, summary: str) -> dict[str, Any]:
    """`dvc push`, then commit the workspace and tag it `<prefix><version>`. Safe to retry: a tag
    that exists means an earlier try finished, and a commit is made only once."""
    root = ws.root
    tag = f"{ws.params.tag_prefix}{version}"
    existing = tag_commit(root, tag)
    if existing:
        log.info("%s already tags commit %s; nothing to publish", tag, existing[:12])
        return {"tag": tag, "commit": existing, "pushed": False}

    log.info("dvc push to %s", ws.remote_url or "the repository's default remote")
    out = run(dvc_command("push"), root, env=tool_env())
    log.info("%s", out.strip().splitlines()[-1] if out.strip() else "dvc push: nothing to push")

    env = ws.git_env()
    message = f"{tag}: {model} version {version}\n\n{summary}\n"
    run(["git", "add", "-A"], root, env=env)
    staged = _has_staged(root)
    head_message = run(["git", "log", "-1", "--format=%s"], root, env=env, check=False).strip()
    if staged or not head_message.startswith(f"{tag}:"):
        run(["git", "commit", "-q", "--allow-empty", "-m", message], root, env=env)
    commit = run(["git", "rev-parse", "HEAD"], root).strip()
    run(["git", "tag", "-a", tag, "-m", message], root, env=env)
    log.info("committed %s and tagged it %s in %s", commit[:12], tag, root)
    return {"tag": tag, "commit": commit, "pushed": True}


def _has_staged(root: Path) -> bool:
    return subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=root).returncode == 1

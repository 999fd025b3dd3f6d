"""Where the retraining DAG's tasks work: a run's commit on the workspace's git remote, and a
worker-local checkout of it for every task. Workers share no disk.

The workspace is a git repository reached through a git remote: a bare repository
(`airflow.git_remote`, `.airflow/workspace.git` in the project by default) or any git URL
(`RETRAIN_GIT_REMOTE` overrides it), never the checkout a person works in. A worker needs that
remote, the DVC remote (`orchestration.remote`) and a folder of its own (`RETRAIN_WORKER_ROOT`,
default `airflow.worker_root`) holding its checkouts and its DVC cache.

1. **prepare** (once per run) checks out the published branch, so the run starts from the last
   published `dvc.lock` and DVC recognises unchanged stages; mirrors the project's sources into it
   (what git would track, without `dvc.lock`); in demo mode writes `embed.as_of` into its
   `params.yaml`; commits when anything changed and pushes the commit to `refs/retrain/runs/<run>`.
2. **each task** gets a fresh checkout of that commit in `<worker root>/runs/<run>/<task>`: parallel
   tasks never share a folder, and a retry never trusts what a dead try left behind.
3. **publish** commits the run's merged `dvc.lock` on top of the run commit, tags it
   `<tag_prefix><Triton version>` (and the model registry's tags) and pushes branch and tags in one
   atomic push: either all of it is published or nothing is.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestration.params import AirflowParams, load_project_params, parse_project_params
from orchestration.remote import redact
from orchestration.run_values import PreparedRun
from pipeline import atomic
from pipeline.errors import StageError
from pipeline.params import read_yaml

log = logging.getLogger(__name__)

GIT_REMOTE_ENV = "RETRAIN_GIT_REMOTE"  # overrides airflow.git_remote
WORKER_ROOT_ENV = "RETRAIN_WORKER_ROOT"  # overrides airflow.worker_root, per worker
RUN_REFS = "refs/retrain/runs/"  # where prepare pushes each run's commit
OWNED = ("dvc.lock", ".dvc/config.local")  # never copied from the project: the workspace's own
SKIPPED_DIRS = (".dvc/tmp/", ".dvc/cache/", ".git/")


class WorkspaceError(StageError):
    """A git command on the workspace failed; the message has its output."""


@dataclass(frozen=True)
class Workspace:
    project: Path  # the source checkout (where params.yaml and dvc.yaml are edited)
    params: AirflowParams
    git_remote: str  # absolute path of a (bare) repository, or a git URL
    worker_root: Path  # this worker's checkouts and DVC cache

    @classmethod
    def resolve(
        cls, project: str | Path, env: Mapping[str, str] | None = None, params: AirflowParams | None = None
    ) -> Workspace:
        """`params`: the project's `airflow:` section (read from its params.yaml when not given)."""
        env = os.environ if env is None else env
        project = Path(project).resolve()
        params = params or load_project_params(project / "params.yaml").airflow
        remote = env.get(GIT_REMOTE_ENV) or params.git_remote
        if not is_url(remote):
            remote = str((project / remote).resolve())
        root = (project / (env.get(WORKER_ROOT_ENV) or params.worker_root)).resolve()
        return cls(project=project, params=params, git_remote=remote, worker_root=root)

    @property
    def cache_dir(self) -> Path:
        """The worker's DVC cache, shared by all its checkouts."""
        return self.worker_root / "dvc-cache"

    def checkout_path(self, run_key: str, name: str) -> Path:
        return self.worker_root / "runs" / run_key / name

    def git_env(self) -> dict[str, str]:
        """Author and committer from params: commits work where git has no identity configured."""
        name, email = split_author(self.params.git_author)
        return {
            **os.environ,
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_TERMINAL_PROMPT": "0",  # a missing credential fails instead of waiting for a person
        }


def split_author(author: str) -> tuple[str, str]:
    match = re.fullmatch(r"(.+?) <(.+)>", author)
    if match is None:  # params.py checks the form; this keeps mypy and a hand-made object honest
        raise WorkspaceError(f"git_author must look like 'Name <email>', got {author!r}")
    return match.group(1), match.group(2)


def is_url(remote: str) -> bool:
    """A git URL (`https://`, `ssh://`, `file://`, `git@host:path`) rather than a local path."""
    return "://" in remote or bool(re.match(r"^[\w.-]+@[\w.-]+:", remote))


def run(cmd: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None, check: bool = True) -> str:
    result = subprocess.run(list(cmd), cwd=cwd, env=dict(env or os.environ), capture_output=True, text=True)
    if check and result.returncode:
        shown = " ".join(redact(part) for part in cmd)
        output = redact(f"{result.stdout}{result.stderr}".strip())
        raise WorkspaceError(f"`{shown}` failed in {cwd} (exit {result.returncode}):\n{output}")
    return result.stdout


def dvc_command(*args: str) -> list[str]:
    """DVC from the interpreter running this code, whatever PATH says."""
    return [sys.executable, "-m", "dvc", *args]


def tool_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """This virtualenv's bin first on PATH: the stage commands say `python -m stages...`."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def safe_run_key(run_id: str) -> str:
    """A run id as a folder name and git ref component (`manual__2026-01-26T00:00:00+00:00`)."""
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("._") or "run"
    return key.replace("..", "_")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes of one worker (released when the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the git remote --------------------------------------------------------------------------
def ensure_git_remote(ws: Workspace) -> None:
    """Create the bare repository when the remote is a local path that does not exist yet."""
    if is_url(ws.git_remote) or (Path(ws.git_remote) / "HEAD").exists():
        return
    path = Path(ws.git_remote)
    with file_lock(path.parent / f".{path.name}.lock"):
        if not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            # HEAD on the published branch: a plain `git clone` then checks out the newest version
            run(["git", "init", "-q", "--bare", f"--initial-branch={ws.params.git_branch}"], path)
            log.info("created the workspace's git remote %s", path)


def remote_ref(ws: Workspace, ref: str) -> str | None:
    """The commit `ref` names on the remote (tags peeled), or None."""
    ws.worker_root.mkdir(parents=True, exist_ok=True)
    out = run(["git", "ls-remote", ws.git_remote, ref, f"{ref}^{{}}"], ws.worker_root, env=ws.git_env())
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    return found.get(f"{ref}^{{}}") or found.get(ref)


def checkout(ws: Workspace, run_key: str, name: str, ref: str, commit: str | None = None, depth: int = 1) -> Path:
    """A fresh worker-local checkout of `ref` (and exactly `commit`, when given) for task `name`,
    with `depth` commits of history (publish needs the run commit's parent: git proves a
    fast-forward of the published branch from the commits it has)."""
    path = ws.checkout_path(run_key, name)
    ws.worker_root.mkdir(parents=True, exist_ok=True)
    prune_runs(ws, keep=run_key)
    if path.exists():  # a previous try of this task on this worker: never trust it
        shutil.rmtree(path)
    path.mkdir(parents=True)
    env = ws.git_env()
    run(["git", "init", "-q"], path, env=env)
    run(["git", "fetch", "-q", "--depth", str(depth), ws.git_remote, ref], path, env=env)
    run(["git", "checkout", "-q", "--detach", "FETCH_HEAD"], path, env=env)
    head = run(["git", "rev-parse", "HEAD"], path).strip()
    if commit and head != commit:
        raise WorkspaceError(
            f"{ref} on {redact(ws.git_remote)} is {head[:12]}, but this run prepared {commit[:12]}: "
            "the run was prepared again while it ran; clear the whole run to start it over"
        )
    log.info("workspace: %s", path)
    return path


def prune_runs(ws: Workspace, keep: str) -> None:
    """Keep the checkouts of the newest `airflow.worker_keep_runs` runs (and of run `keep`)."""
    runs = ws.worker_root / "runs"
    if not runs.is_dir():
        return
    with file_lock(ws.worker_root / ".prune.lock"):
        folders = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in [p for p in folders if p.name != keep][max(ws.params.worker_keep_runs - 1, 0) :]:
            shutil.rmtree(old, ignore_errors=True)


# --- prepare ---------------------------------------------------------------------------------
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


def sync(project: Path, root: Path, as_of: str | None, owned: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """Mirror the project's sources into the checkout `root`; set `embed.as_of` when given.
    Files in `owned` are the workspace's own once it has them (publish writes them): copied from
    the project only where the checkout has none, never removed. Returns the files changed and removed."""
    files = source_files(project)
    # params.yaml is written below, with the run's own values.
    changed = [
        name
        for name in files
        if name != "params.yaml"
        and not (name in owned and (root / name).exists())
        and _copy_if_changed(project / name, root / name)
    ]
    tracked = set(run(["git", "ls-files", "-z"], root).split("\0")) - {""} if (root / ".git").exists() else set()
    kept = {*OWNED, *owned, "params.yaml"}
    removed = sorted(name for name in tracked - set(files) if name not in kept)
    for name in removed:
        (root / name).unlink(missing_ok=True)

    params_path = root / "params.yaml"
    text = (project / "params.yaml").read_text()
    if as_of is not None:
        text = set_param(text, "embed", "as_of", as_of)
        checked = parse_project_params(read_yaml(text), "workspace params.yaml")
        assert checked.embed.as_of == as_of, "set_param wrote the wrong line"
    if not params_path.exists() or params_path.read_text() != text:
        atomic.write_text(params_path, text)
        changed.append("params.yaml")
    return sorted(changed), removed


def source_commit(project: Path) -> str | None:
    """The project's HEAD, with `+dirty` when its working tree differs from it."""
    if not (project / ".git").exists():
        return None
    head = run(["git", "rev-parse", "--short=12", "HEAD"], project, check=False).strip() or None
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], project, check=False).strip()
    return f"{head}+dirty" if head and dirty else head


def prepare(
    ws: Workspace,
    run_key: str,
    as_of: str | None,
    before_commit: Callable[[Path], object] | None = None,
    owned: Collection[str] = (),
) -> PreparedRun:
    """The run's commit: the published branch with the project's sources of now (and whatever
    `before_commit` writes into the checkout), pushed to the run's ref. Safe to retry: a second
    try pushes an equivalent commit to the same ref."""
    ensure_git_remote(ws)
    branch = f"refs/heads/{ws.params.git_branch}"
    base = remote_ref(ws, branch)
    env = ws.git_env()
    if base:
        root = checkout(ws, run_key, "prepare_workspace", branch, base)
    else:  # the first run ever: nothing published yet
        root = ws.checkout_path(run_key, "prepare_workspace")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        run(["git", "init", "-q"], root, env=env)
        log.info("workspace: %s (the first run: %s has no %s yet)", root, redact(ws.git_remote), branch)
    sync(ws.project, root, as_of, owned)
    if before_commit is not None:
        before_commit(root)
    project_commit = source_commit(ws.project)
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], root)
    changed = sorted(line[3:] for line in status.splitlines() if not line.startswith(" D"))
    removed = sorted(line[3:] for line in status.splitlines() if line.startswith(" D"))
    if status.strip() or not base:
        # Commit what this run builds from, so that the model card's git commit (written by
        # export) names these exact sources and params. (DVCLive also refuses an empty repository.)
        run(["git", "add", "-A"], root, env=env)
        message = f"sources for embed.as_of={as_of} (project {project_commit})"
        run(["git", "commit", "-q", "--allow-empty", "-m", message], root, env=env)
    commit = run(["git", "rev-parse", "HEAD"], root).strip()
    ref = f"{RUN_REFS}{run_key}"
    run(["git", "push", "-q", "--force", ws.git_remote, f"{commit}:{ref}"], root, env=env)
    log.info(
        "run %s: commit %s on %s (%d files changed, %d removed since the last published run %s; embed.as_of=%s)",
        run_key,
        commit[:12],
        redact(ws.git_remote),
        len(changed),
        len(removed),
        (base or "none")[:12],
        as_of,
    )
    return PreparedRun(
        commit=commit,
        ref=ref,
        base=base,
        as_of=as_of,
        changed=changed[:50],
        removed=removed[:50],
        source_commit=project_commit,
        workspace=str(root),
    )


# --- publish ---------------------------------------------------------------------------------
def fetch_tags(ws: Workspace, root: Path) -> None:
    """The remote's tags into the checkout `root` (the model registry numbers its tags from them)."""
    if run(["git", "ls-remote", "--tags", ws.git_remote], root, env=ws.git_env()).strip():
        run(["git", "fetch", "-q", "--depth", "1", ws.git_remote, "+refs/tags/*:refs/tags/*"], root, env=ws.git_env())


def commit_published(ws: Workspace, root: Path, lock_text: str, version: int, message: str) -> tuple[str, str]:
    """Commit `lock_text` as dvc.lock in the checkout `root` (of the run commit) and tag it
    `<prefix><version>`, locally; returns (commit, tag)."""
    tag = f"{ws.params.tag_prefix}{version}"
    env = ws.git_env()
    atomic.write_text(root / "dvc.lock", lock_text)
    run(["git", "add", "dvc.lock"], root, env=env)
    run(["git", "commit", "-q", "--allow-empty", "-m", f"{tag}: {message}"], root, env=env)
    commit = run(["git", "rev-parse", "HEAD"], root).strip()
    run(["git", "tag", "-f", "-a", tag, "-m", f"{tag}: {message}"], root, env=env)
    return commit, tag


def push_published(ws: Workspace, root: Path, commit: str, tags: Sequence[str]) -> None:
    """The published branch at `commit` and `tags`, in one atomic push: all of it or nothing."""
    refs = [f"{commit}:refs/heads/{ws.params.git_branch}", *(f"refs/tags/{t}" for t in tags)]
    result = subprocess.run(
        ["git", "push", "--atomic", "--porcelain", ws.git_remote, *refs],
        cwd=root,
        env=ws.git_env(),
        capture_output=True,
        text=True,
    )
    if result.returncode:
        output = redact(result.stdout + result.stderr).strip()
        if "non-fast-forward" in output or "fetch first" in output:
            raise WorkspaceError(
                f"publishing {', '.join(tags)} was refused: {ws.params.git_branch} on {redact(ws.git_remote)} moved "
                f"since this run was prepared (another run published meanwhile); nothing was published. "
                f"Start a new run.\n{output}"
            )
        raise WorkspaceError(f"git push to {redact(ws.git_remote)} failed; nothing was published:\n{output}")
    log.info("published commit %s to %s: %s", commit[:12], redact(ws.git_remote), ", ".join(tags))

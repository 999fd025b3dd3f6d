"""The served model in DVC's model registry, the GTO way: git tags on the workspace repository.

- `dvc.yaml` declares the model under `artifacts:` (its name is `export.model_name`);
- each published Triton version N is registered as `<model>@vN.0.0` (GTO versions are semantic
  versions with a `v`; Triton's integer version maps onto the major number);
- the `airflow.registry_stage` stage (`prod`) is assigned with `<model>#prod#<k>` tags: a new
  assignment on every promotion and on every rollback, so the latest one says what serves now.

Then `gto show` (in a clone of the workspace's git remote) answers "what is in prod", and
`dvc artifacts get <remote> <model> --stage prod` fetches it. The functions work on a local
checkout; the caller pushes the tags they return.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration.remote import redact
from pipeline.errors import StageError

if TYPE_CHECKING:
    from orchestration.workspace import Workspace

_VERSION = re.compile(r"^v(\d+)\.0\.0$")


def semver(version: int) -> str:
    """Triton version N as the semantic version GTO accepts: vN.0.0."""
    return f"v{int(version)}.0.0"


def triton_version(name: str) -> int | None:
    match = _VERSION.match(name)
    return int(match.group(1)) if match else None


def register(root: Path, model: str, version: int, stage: str, message: str, author: tuple[str, str]) -> list[str]:
    """Register HEAD of `root` as `<model>@vN.0.0` and assign it to `stage`; returns the new tags."""
    from gto import api

    name, email = author
    tags = []
    if semver(version) not in _versions(root, model):
        api.register(
            str(root),
            model,
            "HEAD",
            version=semver(version),
            message=f"{model} {semver(version)}: Triton version {version}. {message}",
            author=name,
            author_email=email,
        )
        tags.append(f"{model}@{semver(version)}")
    tags.append(assign(root, model, version, stage, f"promoted: {message}", author))
    return tags


def assign(root: Path, model: str, version: int, stage: str, message: str, author: tuple[str, str]) -> str:
    """A new `<model>#<stage>#<k>` assignment of version N (also when it held the stage before:
    that is a rollback); returns the tag."""
    from gto import api

    before = set(_tags(root))
    api.assign(
        str(root),
        model,
        stage,
        version=semver(version),
        message=message,
        force=True,
        author=author[0],
        author_email=author[1],
    )
    (created,) = set(_tags(root)) - before
    return created


def in_stage(root: Path, model: str, stage: str) -> int | None:
    """The Triton version holding `stage` now (what `gto show` lists under `#<stage>`), or None."""
    from gto import api

    shown = api.show(str(root)) if _tags(root) else {}
    version = (shown.get(model) or {}).get("stage", {}).get(stage)
    return triton_version(str(version)) if version else None


def _versions(root: Path, model: str) -> list[str]:
    from gto import api

    if not _tags(root) or model not in api.show(str(root)):
        return []
    return [str(row["version"]) for row in api.show(str(root), model)]


def _tags(root: Path) -> list[str]:
    import subprocess

    return subprocess.run(["git", "tag"], cwd=root, capture_output=True, text=True, check=True).stdout.split()


# --- on the workspace's git remote ------------------------------------------------------------
@contextlib.contextmanager
def remote_checkout(ws: Workspace) -> Iterator[Path]:
    """A throwaway checkout of the published branch with every tag, in the worker root."""
    from orchestration import workspace

    ws.worker_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ws.worker_root, prefix="registry-") as folder:
        root = Path(folder)
        workspace.run(["git", "init", "-q"], root)
        branch = f"refs/heads/{ws.params.git_branch}"
        if workspace.remote_ref(ws, branch) is None:
            raise StageError(f"nothing is published on {redact(ws.git_remote)} yet (no {ws.params.git_branch} branch)")
        workspace.run(["git", "fetch", "-q", "--depth", "1", ws.git_remote, branch], root, env=ws.git_env())
        workspace.run(["git", "checkout", "-q", "--detach", "FETCH_HEAD"], root)
        workspace.fetch_tags(ws, root)
        yield root


def show(ws: Workspace) -> dict[str, Any]:
    """`gto show` of the workspace's git remote: per model, the latest version and each stage's."""
    from gto import api

    with remote_checkout(ws) as root:
        return api.show(str(root)) if _tags(root) else {}


def promote(ws: Workspace, model: str, version: int, message: str) -> str:
    """Assign `airflow.registry_stage` to published version N on the git remote (a rollback, or a
    manual promotion); returns the new tag."""
    from orchestration import workspace

    stage = ws.params.registry_stage
    with remote_checkout(ws) as root:
        if semver(version) not in _versions(root, model):
            raise StageError(
                f"{model} version {version} was never published ({model}@{semver(version)} is not on "
                f"{redact(ws.git_remote)}); published: {sorted(_versions(root, model))}"
            )
        if in_stage(root, model, stage) == version:
            return f"{model}#{stage} (already version {version})"
        tag = assign(root, model, version, stage, message, workspace.split_author(ws.params.git_author))
        workspace.run(["git", "push", "-q", ws.git_remote, f"refs/tags/{tag}"], root, env=ws.git_env())
    return tag

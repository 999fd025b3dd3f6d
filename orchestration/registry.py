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

import re
from pathlib import Path

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

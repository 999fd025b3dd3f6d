"""Lineage: what a candidate was built from, as DVC and git name it (its model card records both)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path


def file_md5(path: str | Path) -> str:
    """The md5 DVC 3 records for a file (of its bytes, as they are), or for a folder (the tables
    clean and split write: `<md5 of its listing>.dir`, the listing being each file's md5 and path
    in it, sorted by path, as JSON)."""
    path = Path(path)
    if path.is_dir():
        listing = [
            {"md5": file_md5(f), "relpath": f.relative_to(path).as_posix()}
            for f in sorted(path.rglob("*"), key=lambda f: f.relative_to(path).as_posix())
            if f.is_file()
        ]
        return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str | None:
    """HEAD of the repository the stage runs in; None outside git (e.g. an unpacked release)."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None

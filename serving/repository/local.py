"""A model repository in a local folder (or a shared filesystem mounted on every writer)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from pipeline.atomic import atomic_dir, write_bytes
from serving.repository.store import RepositoryError, translate_disk_full


class LocalStore:
    """Files under `root`. A folder is written beside its final name and renamed into place."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.location = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def all_folders(self, key: str) -> list[str]:
        folder = self.path(key)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    folders = all_folders  # a rename makes a folder appear whole, so every visible folder is finished

    def read(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def write(self, key: str, data: bytes) -> None:
        with translate_disk_full(self.location, key):
            write_bytes(self.path(key), data)

    def write_folder(self, key: str, files: Mapping[str, bytes]) -> None:
        target = self.path(key)
        if target.exists():
            raise RepositoryError(f"{target} already exists; the repository changed under us, retry")
        with translate_disk_full(self.location, key), atomic_dir(target) as tmp:
            for name, data in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)

    def read_folder(self, key: str) -> dict[str, bytes]:
        folder = self.path(key)
        return {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.relative_to(folder).parts
        }

    def remove_folder(self, key: str) -> None:
        """Renamed aside first, so that a reader never sees half of a folder."""
        target = self.path(key)
        if not target.exists():
            return
        trash = target.with_name(f".{target.name}.removed")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def make_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self, key: str, timeout_s: float) -> Iterator[None]:
        """An flock on `<root>/.<key>.lock`: excludes every writer that sees the same filesystem."""
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        with open(self.root / f".{key}.lock", "w") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RepositoryError(
                            f"another push, rollback or prune of {key} in {self.location} did not finish within "
                            f"{timeout_s:.0f}s; retry when it is done"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

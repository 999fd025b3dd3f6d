"""Atomic writes: whole files with the permissions of a normal write, on disk before they are visible."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import atomic


@pytest.fixture
def umask() -> Iterator[None]:
    """Run the test under umask 022 (a typical login shell), whatever the runner's umask is."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_get_the_mode_a_normal_write_gets(tmp_path, umask):
    # A server running as another user must be able to read a pinned config.pbtxt.
    atomic.write_text(tmp_path / "config.pbtxt", "name: 'm'\n")
    (tmp_path / "plain.txt").write_text("x")
    assert mode(tmp_path / "config.pbtxt") == mode(tmp_path / "plain.txt") == 0o644

    with atomic.atomic_path(tmp_path / "by_path.bin") as tmp:
        tmp.write_bytes(b"x")
    assert mode(tmp_path / "by_path.bin") == 0o644


def test_a_restrictive_umask_is_respected(tmp_path):
    previous = os.umask(0o077)
    try:
        atomic.write_text(tmp_path / "secret.txt", "x")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "secret.txt") == 0o600


def test_atomic_dir_gets_the_mode_of_a_normal_mkdir(tmp_path, umask):
    with atomic.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("a")
    (tmp_path / "plain").mkdir()
    assert mode(tmp_path / "out") == mode(tmp_path / "plain") == 0o755


class SyncLog:
    """Records os.fsync (by the path behind the descriptor) and os.replace calls, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.events: list[tuple[str, str]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src, dst) -> None:
            self.events.append(("replace", str(Path(src).resolve())))
            real_replace(src, dst)

        monkeypatch.setattr(atomic.os, "fsync", fsync)
        monkeypatch.setattr(atomic.os, "replace", replace)

    def index(self, kind: str, path: Path) -> int:
        return self.events.index((kind, str(path.resolve())))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the file behind a descriptor")
def test_file_and_its_folder_are_synced_around_the_rename(tmp_path, monkeypatch):
    # A crash right after the rename must not leave an empty or torn file in place.
    sync = SyncLog(monkeypatch)
    target = tmp_path / "metrics.json"
    with atomic.atomic_path(target) as tmp:
        tmp.write_text("{}")
        temp_file = tmp.resolve()

    assert target.read_text() == "{}"
    assert sync.index("fsync", temp_file) < sync.index("replace", temp_file)  # data before the name
    assert sync.index("replace", temp_file) < sync.index("fsync", tmp_path)  # then the folder's entry


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the file behind a descriptor")
def test_every_file_of_an_atomic_dir_is_synced_before_the_swap(tmp_path, monkeypatch):
    sync = SyncLog(monkeypatch)
    with atomic.atomic_dir(tmp_path / "candidate") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "model.onnx").write_bytes(b"onnx")
        (tmp / "golden.json").write_text("{}")
        staged = tmp.resolve()

    swap = sync.index("replace", staged)
    for inner in ("sub/model.onnx", "golden.json"):
        assert sync.index("fsync", staged / inner) < swap
    assert sync.index("fsync", tmp_path) > swap


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]

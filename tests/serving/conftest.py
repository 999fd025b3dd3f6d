"""Fixtures for the serving tests: tiny exported candidates and one real Triton server per session.

Candidates come from devtools/toy.py (the export stage's layout around a hand-made ONNX graph), so
these tests never depend on the training pipeline having run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import free_ports, local_triton

from devtools.toy import build_candidate


@pytest.fixture
def unused_port() -> int:
    return free_ports(1)[0]


@pytest.fixture
def unused_ports() -> list[int]:
    """Three ports for a server of its own: http, grpc, metrics."""
    return free_ports(3)


@pytest.fixture
def make_candidate(tmp_path: Path) -> Callable[..., Path]:
    """make_candidate(name=..., seed=..., broken=...) -> a fresh candidate folder."""
    counter = iter(range(1_000_000))

    def make(**kwargs) -> Path:
        return build_candidate(tmp_path / f"candidate-{next(counter)}", **kwargs)

    return make


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One real tritonserver for the session, on free ports, stopped by its PID at the end."""
    with local_triton(tmp_path_factory.mktemp("triton")) as settings:
        yield settings


@pytest.fixture(scope="session")
def serving_settings(triton_server):
    """Push/status/rollback settings aimed at the session's server, with short retries."""
    from serving.client import ClientSettings
    from serving.settings import ServingSettings

    client = ClientSettings.local(triton_server, timeout_s=30.0, retries=1, backoff_s=0.1)
    return ServingSettings(client=client, repository=triton_server.repository, load_timeout_s=60.0, retention=3)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted on a fresh folder: a disk that really fills up. Unmounted afterwards."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(
            "mounting a size-limited tmpfs needs root (CAP_SYS_ADMIN), which this machine does not give: "
            + (result.stderr.strip() or f"mount exited {result.returncode}")
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


@pytest.fixture
def fill_disk() -> Callable[[Path], None]:
    """fill_disk(folder): write a filler file there until its filesystem has no byte left."""

    def fill(folder: Path) -> None:
        chunk = b"\0" * 4096
        with open(folder / "filler", "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(chunk)
            except OSError:
                pass
        with open(folder / "filler-tail", "wb", buffering=0) as handle:  # the last partial block
            try:
                while True:
                    handle.write(b"\0")
            except OSError:
                pass

    return fill

"""Plain helpers shared by the test folders (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from devtools.ports import free_ports  # noqa: F401 - re-exported: ports for the tests' own servers

ROOT = Path(__file__).resolve().parents[1]

# Tests commit in throwaway repositories; CI machines may have no git identity.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def copy_project(target: Path) -> Path:
    """The project's source files (what git would track, without dvc.lock) as a fresh git repository."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in files:
        source = ROOT / name
        if name and source.is_file() and "__pycache__" not in name and name != "dvc.lock":
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    env = {**os.environ, **GIT_ENV}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "copy"]):
        subprocess.run(cmd, cwd=target, env=env, check=True, capture_output=True)
    return target


def edit_params(project: Path, **changes) -> None:
    """Set dotted keys, spelt with double underscores (`train__epochs=3`), in a copy's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = params
        *parents, key = dotted.split("__")
        for part in parents:
            node = node[part]
        node[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@contextlib.contextmanager
def local_triton(state: Path, sample: Any = None) -> Iterator:
    """A real tritonserver on free ports with its repository under `state` (started as every command
    starts one: serving/startup.py), stopped by its PID; keeping a live sample when `sample` (a
    serving.params.SampleParams) says so.

    Its model control is restricted to its key: talk to it with `ClientSettings.local(settings)`,
    or give a Connection the extra `control_key: settings.read_control_key()`."""
    from serving.params import SampleParams
    from serving.server import ServerSettings, stop_server
    from serving.startup import start_local_server

    http, grpc, metrics = free_ports(3)
    settings = ServerSettings(
        repository=state / "models",
        state_dir=state / "state",
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        start_timeout_s=60.0,
        sample=sample or SampleParams(),
    )
    start_local_server(settings)  # the one way every command starts it
    try:
        yield settings
    finally:
        stop_server(settings)


# Throwaway credentials for the local S3 API server: moto accepts any key, and nothing real is
# ever reachable from the tests.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def moto_s3(*buckets: str, timeout_s: float = 30.0, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real S3 API server (moto's server mode, as DVC's own tests use) on a free 127.0.0.1 port,
    with `buckets` created; yields its endpoint URL and stops the process afterwards.

    Clients need S3_ENV (any key id and secret) and the endpoint URL. `env` adds to the server's
    environment (`INITIAL_NO_AUTH_ACTION_COUNT`: moto checks IAM policies after that many requests)."""
    import sys
    import time
    import urllib.error
    import urllib.request

    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **S3_ENV, **(env or {})},
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()  # noqa: S310 - 127.0.0.1
                break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {endpoint} (exit {process.poll()})") from None
                time.sleep(0.1)
        if buckets:
            import boto3

            s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                region_name=S3_ENV["AWS_DEFAULT_REGION"],
            )
            for bucket in buckets:
                s3.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def started(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None, stop_timeout_s: float = 30
) -> Iterator[subprocess.Popen]:
    """A background process in its own session, its output in `log`, stopped with its whole process
    group at the end (SIGTERM, then SIGKILL after `stop_timeout_s`)."""
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

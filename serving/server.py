"""Start and stop a real local Triton Inference Server, without Docker.

The nvidia-pytriton wheel bundles a `tritonserver` binary with Triton's Python backend. We launch
that binary directly (PyTriton's own wrapper guards the repository API with a token that plain
tritonclient does not send), in explicit model-control mode, bound to 127.0.0.1, on the live model
repository. The server's PID file and log live in an ignored state folder (`.triton/` by default).

`python -m serving start` then reloads every model whose `config.pbtxt` pins a version (serving.push.restore_pinned), so a restarted server comes
back serving what it served before: the repository on disk is the record of what serves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.atomic import write_text
from pipeline.params import ServingParams
from serving.repository import open_store

log = logging.getLogger(__name__)

PID_FILE = "tritonserver.pid"
LOG_FILE = "tritonserver.log"
BACKENDS = "backends"  # writable copy of the wheel's backends + the Python stub for this interpreter


class ServerError(RuntimeError):
    """The local server could not be started or stopped; the message says what to do."""


@dataclass(frozen=True)
class ServerSettings:
    """Where the local server keeps its state and which 127.0.0.1 ports it binds."""

    repository: Path | str  # the live model repository: a local folder, or an s3:// URL (passed through)
    state_dir: Path  # PID file, log, writable backend copy
    http_port: int
    grpc_port: int
    metrics_port: int
    start_timeout_s: float = 30.0
    stop_timeout_s: float = 15.0

    @classmethod
    def from_params(cls, params: ServingParams, env: Mapping[str, str] | None = None) -> ServerSettings:
        """Params, with `TRITON_MODEL_REPOSITORY`, `TRITON_STATE_DIR` and `TRITON_*_PORT` overriding."""
        env = os.environ if env is None else env
        return cls(
            repository=_repository(env.get("TRITON_MODEL_REPOSITORY") or params.repository),
            state_dir=Path(env.get("TRITON_STATE_DIR", params.state_dir)),
            http_port=int(env.get("TRITON_HTTP_PORT", params.http_port)),
            grpc_port=int(env.get("TRITON_GRPC_PORT", params.grpc_port)),
            metrics_port=int(env.get("TRITON_METRICS_PORT", params.metrics_port)),
            start_timeout_s=params.start_timeout_s,
        )

    @property
    def pid_file(self) -> Path:
        return self.state_dir / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.state_dir / LOG_FILE

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v2/health/ready"

    def with_ports(self, http: int, grpc: int, metrics: int) -> ServerSettings:
        return replace(self, http_port=http, grpc_port=grpc, metrics_port=metrics)


@dataclass(frozen=True)
class ServerState:
    pid: int | None  # from the PID file, if its process is alive
    ready: bool  # /v2/health/ready answered 200
    settings: ServerSettings

    def describe(self) -> str:
        where = f"http://127.0.0.1:{self.settings.http_port} (grpc {self.settings.grpc_port})"
        if self.pid is None:
            return f"not running (no live PID in {self.settings.pid_file})"
        return f"pid {self.pid}, {'ready' if self.ready else 'NOT ready'} at {where}, log {self.settings.log_file}"


def _repository(location: str) -> Path | str:
    """A URL stays a string: Path() would turn s3://b/p into the local folder s3:/b/p."""
    return location if "://" in location else Path(location)


def _wheel_dir() -> Path:
    try:
        import pytriton
    except ImportError:  # pragma: no cover - part of the project's dependencies
        raise ServerError("nvidia-pytriton is not installed; run `make install`") from None
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def _libs_dir() -> Path:
    return _wheel_dir().parents[1] / "nvidia_pytriton.libs"


def prepare_backends(state_dir: Path) -> Path:
    """A writable copy of the wheel's backends with this Python's backend stub beside it."""
    target = state_dir / BACKENDS
    stub = target / "python" / "triton_python_backend_stub"
    if stub.exists():
        return target
    wheel = _wheel_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    source_stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not source_stub.exists():
        raise ServerError(f"the pytriton wheel has no Python backend stub for Python {version}")
    tmp = state_dir / f".{BACKENDS}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(wheel / "backends", tmp, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(source_stub, tmp / "python" / "triton_python_backend_stub")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def server_command(settings: ServerSettings, backends: Path) -> list[str]:
    return [
        str(_wheel_dir() / "bin" / "tritonserver"),
        f"--model-repository={_repository_arg(settings.repository)}",
        f"--backend-directory={backends.resolve()}",
        "--model-control-mode=explicit",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--http-port={settings.http_port}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-port={settings.metrics_port}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--exit-timeout-secs=5",
    ]


def _repository_arg(repository: Path | str) -> str:
    return repository if isinstance(repository, str) else str(repository.resolve())


def server_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Python stub needs the wheel's bundled libs (libcudart: a load hangs without it) and this
    virtualenv's bin first on PATH (to import numpy and onnxruntime)."""
    env = dict(os.environ if base is None else base)
    libs = [str(_libs_dir()), sysconfig.get_config_var("LIBDIR") or ""]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not yet reaped) still answers kill(0).
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False
    return True


def _is_tritonserver(pid: int) -> bool:
    """Guard against a stale PID file whose number now belongs to another process."""
    try:
        return b"tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _alive(pid)  # no /proc (not Linux): trust the PID file


def read_pid(settings: ServerSettings) -> int | None:
    """The PID from the PID file if that process is a live tritonserver, else None."""
    try:
        pid = int(settings.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) and _is_tritonserver(pid) else None


def is_ready(settings: ServerSettings, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(settings.ready_url, timeout=timeout_s) as response:  # noqa: S310 - 127.0.0.1
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def log_tail(settings: ServerSettings, lines: int = 20) -> str:
    try:
        return "\n".join(settings.log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _wait_ready(settings: ServerSettings, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + settings.start_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(
                f"tritonserver exited with code {process.returncode} while starting "
                f"(ports {settings.http_port}/{settings.grpc_port}/{settings.metrics_port} busy?). "
                f"Log {settings.log_file}:\n{log_tail(settings)}"
            )
        if is_ready(settings):
            return
        time.sleep(0.2)
    process.terminate()
    raise ServerError(
        f"tritonserver was not ready within {settings.start_timeout_s:.0f}s at {settings.ready_url}; "
        f"it was stopped. Log {settings.log_file}:\n{log_tail(settings)}"
    )


def start_server(settings: ServerSettings) -> ServerState:
    """Start the server (no-op if the PID file names a live one) and wait until it is ready."""
    pid = read_pid(settings)
    if pid is not None:
        log.info("tritonserver already running (pid %d)", pid)
        return ServerState(pid=pid, ready=is_ready(settings), settings=settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    open_store(settings.repository).make_root()  # a local folder, or an S3 prefix
    backends = prepare_backends(settings.state_dir)
    with settings.log_file.open("ab") as log_stream:
        process = subprocess.Popen(
            server_command(settings, backends),
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_environment(),
            start_new_session=True,  # a Ctrl-C in the caller's terminal does not reach the server
        )
    write_text(settings.pid_file, f"{process.pid}\n")
    try:
        _wait_ready(settings, process)
    except ServerError:
        settings.pid_file.unlink(missing_ok=True)
        raise
    log.info("tritonserver ready (pid %d) at %s", process.pid, settings.ready_url)
    return ServerState(pid=process.pid, ready=True, settings=settings)


def stop_server(settings: ServerSettings) -> int | None:
    """SIGTERM the PID from the PID file, wait for it to exit, remove the file. Returns the PID."""
    pid = read_pid(settings)
    if pid is None:
        settings.pid_file.unlink(missing_ok=True)
        log.info("no tritonserver running for %s", settings.pid_file)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + settings.stop_timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        time.sleep(0.1)
    if _alive(pid):
        log.warning("tritonserver (pid %d) ignored SIGTERM for %.0fs; sending SIGKILL", pid, settings.stop_timeout_s)
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    settings.pid_file.unlink(missing_ok=True)
    log.info("tritonserver stopped (pid %d)", pid)
    return pid


def server_state(settings: ServerSettings) -> ServerState:
    pid = read_pid(settings)
    return ServerState(pid=pid, ready=pid is not None and is_ready(settings), settings=settings)

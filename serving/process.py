"""The `tritonserver` binary of the nvidia-pytriton wheel: where it is, a writable copy of its
backends with this Python's backend stub, and the environment it runs in. Launched
directly (PyTriton's own wrapper guards the repository API with a token that plain tritonclient
does not send), in explicit model-control mode, bound to 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

BACKENDS = "backends"  # writable copy of the wheel's backends + the Python stub for this interpreter


class ServerError(RuntimeError):
    """The local server could not be started or stopped; the message says what to do."""


def wheel_dir() -> Path:
    try:
        import pytriton
    except ImportError:  # pragma: no cover - part of the project's dependencies
        raise ServerError("nvidia-pytriton is not installed; run `make install`") from None
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def libs_dir() -> Path:
    return wheel_dir().parents[1] / "nvidia_pytriton.libs"


def prepare_backends(state_dir: Path) -> Path:
    """A writable copy of the wheel's backends with this Python's backend stub beside it."""
    target = state_dir / BACKENDS
    stub = target / "python" / "triton_python_backend_stub"
    if stub.exists():
        return target
    wheel = wheel_dir()
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


def server_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Python stub needs the wheel's bundled libs (libcudart: a load hangs without it) and this
    virtualenv's bin first on PATH (to import numpy and onnxruntime)."""
    env = dict(os.environ if base is None else base)
    libs = [str(libs_dir()), sysconfig.get_config_var("LIBDIR") or ""]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env

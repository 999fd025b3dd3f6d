"""The model-control key: who may load, unload and reconfigure models on a Triton server.

The local server starts with Triton's restricted APIs: the model-repository and model-config
endpoints (index, load, unload, config) answer only requests carrying the header `HEADER` with the
server's key. Inference, health, metadata and statistics stay open. The key is generated for each
start (or taken from `TRITON_CONTROL_KEY`) and written, mode 0600, to `KEY_FILE` in the server's
state folder, where the project's clients read it (serving.client.ClientSettings). It never goes
into params.yaml or a log line.

Triton checks HTTP headers by the name given on its command line, and gRPC metadata under that
name prefixed with `triton-grpc-protocol-`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

HEADER = "triton-control-key"
GRPC_PREFIX = "triton-grpc-protocol-"
KEY_FILE = "control.key"
# Triton's names of the restricted API groups (its --http-restricted-api categories).
RESTRICTED = ("model-repository", "model-config")


def new_key() -> str:
    return secrets.token_urlsafe(32)


def header(protocol: str, key: str) -> dict[str, str]:
    """The request header (HTTP) or metadata entry (gRPC) that carries `key`."""
    return {(GRPC_PREFIX + HEADER if protocol == "grpc" else HEADER): key}


def server_flags(key: str) -> list[str]:
    restriction = f"{','.join(RESTRICTED)}:{HEADER}={key}"
    return [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]


def key_path(state_dir: Path, name: str = KEY_FILE) -> Path:
    return Path(state_dir) / name


def write_key(state_dir: Path, key: str, name: str = KEY_FILE) -> Path:
    """Write the key readable by its owner only (0600 from creation on, then one rename)."""
    path = key_path(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_key(state_dir: Path, name: str = KEY_FILE) -> str | None:
    """The key of the server whose state folder is `state_dir`, or None when it has none."""
    try:
        return key_path(state_dir, name).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def remove_key(state_dir: Path) -> None:
    key_path(state_dir).unlink(missing_ok=True)

"""Free ports on 127.0.0.1: for a scratch server (serving/speed.py), and the tests' and benches' local servers."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on right now (bound then released by the OS), for a local server of
    a test or a benchmark."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()

"""Free ports on 127.0.0.1, for the local servers of tests and benches (serving/ports.py)."""

from serving.ports import free_ports

__all__ = ["free_ports"]

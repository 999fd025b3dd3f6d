"""The one way to start the local Triton: `make run`, `make airflow`, `make cluster`,
`make triton-start` (`python -m serving start`), the tests and the benches all start it here.

1. The process (serving.server.start_server): nothing happens when our server runs already; a
   port held by another process fails the start, naming it.
2. What the repository pins serves again: the server starts in explicit model-control mode with
   nothing loaded, so every model whose history pins a version gets that version loaded (from the
   stored bytes, with its stored config). A model that serves exactly its pinned version already is
   left alone. Without this step a restarted server would answer 404 for the champion, and the next
   run's gate would fail closed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from serving.client import ClientSettings
from serving.push import restore_pinned
from serving.server import ServerSettings, ServerState, start_server
from serving.settings import ServingSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    state: ServerState  # the process: pid, ready, where
    restored: dict[str, int]  # model -> pinned version loaded by this start (empty: all served already)

    def describe(self) -> str:
        loaded = ", ".join(f"{name} version {version}" for name, version in sorted(self.restored.items()))
        return self.state.describe() + (f"; loaded the pinned {loaded}" if loaded else "")


def start_local_server(server: ServerSettings, load_timeout_s: float = 60.0) -> Started:
    """Start the local server of `server` (or find it running) and make it serve what its
    repository pins. Raises ServerError when the process cannot start, a ClientError when a pinned
    version does not load."""
    state = start_server(server)
    client = ClientSettings.local(server)
    restored = restore_pinned(
        ServingSettings(client=client, repository=server.repository, load_timeout_s=load_timeout_s)
    )
    for name, version in sorted(restored.items()):
        log.info("loaded %s version %d (pinned in %s)", name, version, server.repository)
    return Started(state, restored)

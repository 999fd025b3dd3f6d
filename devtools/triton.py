"""The local Triton of params.yaml `serving:` for `make run`, `make airflow` and `make cluster`."""

from __future__ import annotations

import logging

from orchestration.params import ProjectParams

log = logging.getLogger(__name__)


def ensure_triton(params: ProjectParams) -> None:
    from serving.server import ServerSettings, start_server

    state = start_server(ServerSettings.from_params(params.serving))
    log.info("Triton: %s", state.describe())

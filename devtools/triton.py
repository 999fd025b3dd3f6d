"""The local Triton of params.yaml `serving:` for `make run`, `make airflow` and `make cluster`,
started the one way (serving/startup.py): it serves what its repository pins."""

from __future__ import annotations

import logging

from orchestration.params import ProjectParams
from serving.server import ServerSettings
from serving.settings import ServingSettings
from serving.startup import Started, start_local_server

log = logging.getLogger(__name__)


def ensure_triton(params: ProjectParams) -> Started:
    started = start_local_server(
        ServerSettings.from_params(params.serving), ServingSettings.from_params(params.serving).load_timeout_s
    )
    log.info("Triton: %s", started.describe())
    return started

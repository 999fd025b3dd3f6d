"""Serving speed, measured: models loaded side by side on a scratch Triton and driven alternately.

The tune stage (each setting of the candidate's config) and the gate's speed check (the candidate
against the champion) both measure here, the same way. The scratch server is a real
`tritonserver`, started with the project's own code (serving/startup.py) on free 127.0.0.1 ports with an empty
repository in a temporary folder, and stopped afterwards: the models are loaded with their bytes
sent in the load request under names no user request names (`<model>.staging-<k>`), so nothing
reaches the production server, its users, or any repository.

Requests carry the candidate's golden rows (golden.json), as a client sends them, tiled to
`tune.rows_per_request` rows.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.candidate import GoldenSamples
from pipeline.errors import StageError
from pipeline.params import TuneParams
from serving.client import INTERNAL_REQUEST_ID, ClientError, ClientSettings, TritonClient
from serving.loadgen import alternate, drive
from serving.loading import golden_inputs, staging_name, wait_version_ready
from serving.ports import free_ports
from serving.process import ServerError
from serving.repository import config_json, pin_versions
from serving.server import ServerSettings, stop_server
from serving.startup import start_local_server
from serving.tuning import Cells

log = logging.getLogger(__name__)

VERSION = 1  # every model loads as version 1 on the scratch server
BATCHES = 16  # distinct request bodies cycled through


class SpeedError(StageError):
    """The scratch server could not start, or a model to measure did not load there."""


@contextlib.contextmanager
def scratch_server(start_timeout_s: float = 60.0) -> Iterator[ServerSettings]:
    """A real tritonserver on free 127.0.0.1 ports, its repository and state in a temporary folder."""
    scratch = Path(tempfile.mkdtemp(prefix="speed-"))
    http, grpc, metrics = free_ports(3)
    server = ServerSettings(scratch / "models", scratch / "state", http, grpc, metrics, start_timeout_s=start_timeout_s)
    try:
        start_local_server(server)  # the one way every command starts it; its repository is empty
        yield server
    finally:
        stop_server(server)
        shutil.rmtree(scratch, ignore_errors=True)


def request_batches(golden: GoldenSamples, rows: int) -> list[Any]:
    """BATCHES request bodies of `rows` golden rows each (rows repeat when golden.json has fewer)."""
    inputs = golden_inputs(golden)
    n = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
    batches: list[Any] = []
    for k in range(BATCHES):
        picks = (k * rows + np.arange(rows)) % n
        batches.append({name: v[picks] for name, v in inputs.items()} if isinstance(inputs, dict) else inputs[picks])
    return batches


def measure(
    models: dict[str, tuple[Any, dict[str, bytes]]], golden: GoldenSamples, tune: TuneParams, load_timeout_s: float
) -> Cells:
    """Load each of `models` ({label: (ModelConfig, {file in the version folder: bytes})}) on a
    scratch server and drive them alternately (serving/loadgen.py `alternate`) at every
    `tune.concurrency`, `tune.rounds` times. Returns the cells by label; SpeedError when the
    server does not start or a model does not load (the message says which)."""
    try:
        return _measure(models, golden, tune, load_timeout_s)
    except (ServerError, ClientError) as error:
        raise SpeedError(
            f"measuring serving speed on a scratch Triton failed: {error}. A model that does not load "
            "there would not load on the production server either; fix the candidate or its config "
            "(set tune.enabled: false, or gate.max_latency_regression / max_throughput_regression to null, "
            "to skip the measurement)"
        ) from error


def _measure(
    models: dict[str, tuple[Any, dict[str, bytes]]], golden: GoldenSamples, tune: TuneParams, load_timeout_s: float
) -> Cells:
    base = staging_name(golden.model_name)
    names = {label: f"{base}-{k}" for k, label in enumerate(models)}
    with scratch_server() as server:
        with TritonClient(ClientSettings.local(server, timeout_s=load_timeout_s)) as client:
            for label, (config, files) in models.items():
                name = names[label]
                pinned = pin_versions(config, [VERSION], name=name)
                sent = {f"file:{VERSION}/{rel}": data for rel, data in files.items()}
                client.load(name, config_json(pinned), timeout_s=load_timeout_s, files=sent)
                wait_version_ready(client, name, VERSION, load_timeout_s)
        settings = ClientSettings.local(server, timeout_s=30.0, retries=0)

        def caller(name: str) -> tuple[Any, Any]:
            def call(client: TritonClient, batch: Any) -> None:
                client.predict(name, batch, request_id=INTERNAL_REQUEST_ID)

            return call, lambda: TritonClient(settings)

        calls = {label: caller(names[label]) for label in models}
        batches = request_batches(golden, tune.rows_per_request)
        for call, make_state in calls.values():  # warm-up: connections, the stubs' first runs
            drive(call, make_state, batches, 2, 50, 1.0)
        cells = alternate(calls, batches, tune.concurrency, tune.rounds, tune.requests_per_cell, tune.seconds_per_cell)
    log.info("measured %d models x %d concurrencies x %d rounds", len(models), len(tune.concurrency), tune.rounds)
    return cells

"""The `serving:` section of params.yaml: the Triton server and the push/rollback commands.

Its own schema, so that no DVC stage depends on it (a stage reads none of it). Environment
variables and an Airflow Connection override its keys through serving/overrides.py, held to the
same rules; credentials come only from there.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.params import Params, Positive, Section, parse_as

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0.0)]


class SampleParams(Section):
    """A share of live requests kept on the server's host as Parquet parts (docs/live.md): what
    the live loop's drift check and labelled accuracy read. Requests are user data: they stay in
    `dir`, and parts older than `retention_days` are deleted."""

    rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # share of requests kept (0 = off)
    dir: str = ".triton/live"  # folder of the kept rows, one subfolder per served name
    rotate_rows: Positive = 10000  # a part is written once this many rows wait...
    rotate_s: Seconds = 300.0  # ...or this many seconds after the previous one
    retention_days: Seconds = 30.0  # parts older than this are deleted (by the server, at each write)


class LabelsParams(Section):
    """The label service (`python -m serving labels serve`): clients send the true class of a kept
    request by its id (docs/live.md). Its key: LIVE_LABELS_KEY, else <state_dir>/labels.key."""

    host: str = "127.0.0.1"  # address it binds (and `serving label` sends to)
    port: Port = 8003


class ServingParams(Section):
    """The Triton server and the push/rollback commands. Environment variables and an Airflow
    Connection override its keys (serving/overrides.py); credentials come only from there."""

    repository: str = ".triton/models"
    state_dir: str = ".triton"
    http_port: Port = 8000
    grpc_port: Port = 8001
    metrics_port: Port = 8002
    url: str | None = None
    protocol: Literal["http", "grpc"] = "http"
    start_timeout_s: Seconds = 30.0
    load_timeout_s: Seconds = 60.0
    request_timeout_s: Seconds = 10.0
    retries: Annotated[int, Field(ge=0)] = 3
    backoff_s: Annotated[float, Field(ge=0.0)] = 0.5
    retention: Positive = 5
    candidate_entry: Literal["triton", "gpu", "gpu_torchscript"] = "triton"
    sample: SampleParams = SampleParams()
    labels: LabelsParams = LabelsParams()

    @model_validator(mode="after")
    def _check(self) -> ServingParams:
        if len({self.http_port, self.grpc_port, self.metrics_port}) != 3:
            raise ValueError("http_port, grpc_port and metrics_port must differ")
        # A URL Path() has flattened (s3:/b) would otherwise become a local folder named "s3:".
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):/", self.repository)
        if scheme and not self.repository.startswith("s3://"):
            raise ValueError(
                f"repository {self.repository!r}: use a local path, s3://<bucket>/<prefix> or "
                "s3://http(s)://<host>:<port>/<bucket>/<prefix>"
            )
        return self


def serving_params(params: Params, source: str = "params.yaml") -> ServingParams:
    """The `serving:` section of the params a stage or command loaded, checked."""
    return parse_as(ServingParams, params.serving, source, "serving")

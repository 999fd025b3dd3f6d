"""The serving Triton as an Airflow Hook: a Connection becomes the serving code's settings, once.

`TritonHook(conn_id, project=..., serving=params.serving).get_conn()` returns `ServingSettings`
(how to reach the server, where its repository lives), resolved in one step from params.yaml
`serving:`, this worker's `TRITON_*` variables and the Connection, in that order of precedence
(the Connection wins). The Connection's values go into the settings as typed values: nothing is
written to or parsed back from the environment.

How a Connection reads: the scheme comes from the host (`https://triton.example.com`), else from
the connection type when it is `grpc`/`grpcs`, else from the HTTP hook's `schema` field (`https`),
else from the type (`http`, `https`). TLS is on for https/grpcs and whenever an `ssl_*` extra (or
`ssl: true`) is set. The password is sent as a bearer token, and only over TLS unless the extra
`allow_insecure_token: true` says otherwise. Other extras: `headers` (JSON object),
`model_repository` (the live repository the push writes to), `ssl_ca_file`, `ssl_cert_file`,
`ssl_key_file`, `ssl_insecure`, `control_key` (the server's model-control key), `candidate_entry`
(`gpu` for a server on GPUs: the candidate's KIND_GPU entry is pushed), `metrics_url` (its
Prometheus endpoint: status counters, and what a rollout decides on).

With no such Connection, the environment and params.yaml `serving:` apply (the local server). A
relative repository or state folder is relative to the project, so that a task running in another
folder (the gate, in the workspace) still finds the local server's repository and key.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from pipeline.params import ParamsError
from serving.overrides import Overrides
from serving.params import ServingParams
from serving.settings import ServingSettings

log = logging.getLogger(__name__)

SSL_EXTRAS = ("ssl_ca_file", "ssl_cert_file", "ssl_key_file")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class TritonConnectionError(ParamsError):
    """The Connection cannot be used as it is (e.g. a secret that would travel in clear text)."""


class TritonHook(BaseHook):
    """Settings for the serving code from the Airflow Connection `triton_conn_id`."""

    conn_name_attr = "triton_conn_id"
    default_conn_name = "triton_default"
    conn_type = "http"  # Airflow's HTTP form has every field a Triton server needs (host, port, schema, password)
    hook_name = "Triton Inference Server"

    def __init__(
        self,
        triton_conn_id: str = default_conn_name,
        *,
        project: Path,
        serving: ServingParams,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.triton_conn_id = triton_conn_id
        self.project = Path(project)
        self.serving = serving
        self.env = os.environ if env is None else env

    def connection_overrides(self) -> Overrides:
        """The Connection as overrides of params `serving:`; none without a Connection."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.triton_conn_id)
        except AirflowNotFoundException:
            log.info(
                "no Airflow Connection %r: Triton settings from TRITON_* / params.yaml serving:", self.triton_conn_id
            )
            return Overrides()
        overrides = connection_overrides(conn, self.triton_conn_id)
        log.info(
            "Triton from Connection %r: %s (%s%s)",
            self.triton_conn_id,
            overrides.params.get("url", "local default"),
            overrides.params["protocol"],
            ", TLS" if overrides.ssl else "",
        )
        return overrides

    def get_conn(self) -> ServingSettings:
        """params `serving:`, the worker's TRITON_* and the Connection, resolved once."""
        overrides = Overrides.from_env(self.env).merged(self.connection_overrides())
        return ServingSettings.resolve(self.serving, overrides, root=self.project)


def connection_overrides(conn: Any, conn_id: str) -> Overrides:
    """What an Airflow Connection (host, port, schema, conn_type, password, extra) says about a
    Triton server, as typed overrides; TritonConnectionError for a secret that would go out in clear
    text without the Connection allowing it."""
    extra = conn.extra_dejson
    host_scheme, sep, host = (conn.host or "").strip().partition("://")
    if not sep:
        host_scheme, host = "", host_scheme
    kind, schema = (conn.conn_type or "").lower(), (conn.schema or "").lower()
    scheme = host_scheme.lower() or (
        kind if kind in ("grpc", "grpcs") else schema if schema in ("http", "https") else kind
    )
    protocol = "grpc" if scheme.startswith("grpc") else "http"
    tls = (
        scheme in ("https", "grpcs")
        or any(extra.get(key) for key in SSL_EXTRAS)
        or _truthy(extra.get("ssl_insecure"))
        or _truthy(extra.get("ssl"))
    )
    params: dict[str, Any] = {"protocol": protocol}
    if host:
        params["url"] = f"{protocol + 's' if tls else protocol}://{host.rstrip('/')}"
        if conn.port:
            params["url"] += f":{conn.port}"
    for key, serving_key in (("model_repository", "repository"), ("candidate_entry", "candidate_entry")):
        if extra.get(key):
            params[serving_key] = str(extra[key])
    allow_insecure = _truthy(extra.get("allow_insecure_token"))
    loopback = host.rsplit(":", 1)[0].strip("[]") in LOOPBACK
    secrets = [
        what for what, given in (("a password", conn.password), ("a control_key", extra.get("control_key"))) if given
    ]
    if loopback and not conn.password:
        secrets = []  # the local server's key never leaves this machine
    if secrets and not tls and not allow_insecure:
        raise TritonConnectionError(
            f"Airflow Connection {conn_id!r} has {' and '.join(secrets)} but no TLS: it would go out in clear "
            f"text to {params.get('url', 'the server')}. Use an https:// or grpcs:// host or connection type, "
            'or an ssl_* extra; only on a trusted network path, set the extra "allow_insecure_token": true.'
        )
    headers = extra.get("headers")
    if isinstance(headers, str):
        try:
            headers = json.loads(headers)
        except json.JSONDecodeError:
            raise TritonConnectionError(f"Airflow Connection {conn_id!r}: the extra headers is not JSON") from None
    if headers is not None and not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
        raise TritonConnectionError(f"Airflow Connection {conn_id!r}: the extra headers must map names to strings")
    access: dict[str, Any] = {
        "headers": headers or None,
        "auth_token": conn.password or None,
        "ssl": True if tls else None,
        **{key: _text(extra.get(key)) for key in (*SSL_EXTRAS, "control_key", "metrics_url")},
        "ssl_insecure": True if _truthy(extra.get("ssl_insecure")) else None,
        "allow_insecure_token": True if allow_insecure else None,
    }
    given = [*params, *(key for key, value in access.items() if value is not None)]
    return Overrides(params=params, sources=dict.fromkeys(given, f"Airflow Connection {conn_id!r}"), **access)


def _text(value: object) -> str | None:
    return str(value) if value else None


def _truthy(value: object) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")

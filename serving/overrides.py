"""What overrides params.yaml `serving:` for one process: the one override mechanism.

Two sources build an `Overrides`: the `TRITON_*` environment variables (`Overrides.from_env`, the
only place their strings are parsed) and an Airflow Connection (orchestration/triton_hook.py, typed
values, never turned into strings). `merged` layers one over another; `apply` puts the `serving:`
keys through every rule of `ServingParams`, so `TRITON_RETRIES=-1` fails like `retries: -1` in
params.yaml does, naming where the value came from.

Besides `serving:` keys, an override may carry what only the environment or a Connection holds:
credentials (headers, a bearer token, the model-control key), TLS, and the metrics URL.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pipeline.params import ParamsError
from serving.params import ServingParams

# What each `TRITON_*` variable overrides in params.yaml `serving:`.
PARAMS_ENV = {
    "TRITON_URL": "url",
    "TRITON_PROTOCOL": "protocol",
    "TRITON_HTTP_PORT": "http_port",
    "TRITON_GRPC_PORT": "grpc_port",
    "TRITON_METRICS_PORT": "metrics_port",
    "TRITON_STATE_DIR": "state_dir",
    "TRITON_REQUEST_TIMEOUT_S": "request_timeout_s",
    "TRITON_RETRIES": "retries",
    "TRITON_BACKOFF_S": "backoff_s",
    "TRITON_MODEL_REPOSITORY": "repository",
    "TRITON_LOAD_TIMEOUT_S": "load_timeout_s",
    "TRITON_CANDIDATE_ENTRY": "candidate_entry",
    "TRITON_START_TIMEOUT_S": "start_timeout_s",
}
# Variables of the settings params.yaml never holds (credentials, TLS), by field.
ACCESS_ENV = {
    "auth_token": "TRITON_AUTH_TOKEN",
    "ssl_ca_file": "TRITON_SSL_CA_FILE",
    "ssl_cert_file": "TRITON_SSL_CERT_FILE",
    "ssl_key_file": "TRITON_SSL_KEY_FILE",
    "control_key": "TRITON_CONTROL_KEY",
    "metrics_url": "TRITON_METRICS_URL",
}
FLAG_ENV = {
    "ssl": "TRITON_SSL",
    "ssl_insecure": "TRITON_SSL_INSECURE",
    "allow_insecure_token": "TRITON_ALLOW_INSECURE_TOKEN",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Overrides:
    """Settings over params.yaml `serving:`; None = not overridden. `params` holds `serving:` keys
    (a value from the environment is still a string, parsed by the key's own type in `apply`)."""

    params: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] | None = field(default=None, repr=False)  # may carry credentials
    auth_token: str | None = field(default=None, repr=False)  # sent as `Authorization: Bearer <token>`
    ssl: bool | None = None
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_insecure: bool | None = None  # HTTP only: skip certificate verification
    allow_insecure_token: bool | None = None  # send credentials without TLS
    control_key: str | None = field(default=None, repr=False)  # the server's model-control key
    metrics_url: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)  # field or serving key -> where it came from

    def __post_init__(self) -> None:
        unknown = sorted(set(self.params) - set(ServingParams.model_fields))
        if unknown:
            raise ParamsError(f"overrides of unknown serving keys {unknown} (from {self._where(unknown)})")

    def _where(self, keys: list[str]) -> str:
        return ", ".join(self.sources.get(key, key) for key in keys)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Overrides:
        """The `TRITON_*` variables `env` sets (an empty one counts as unset)."""
        params = {key: env[var] for var, key in PARAMS_ENV.items() if env.get(var, "") != ""}
        sources = {key: var for var, key in PARAMS_ENV.items() if key in params}
        values: dict[str, Any] = {name: env.get(var) or None for name, var in ACCESS_ENV.items()}
        values |= {name: _flag(env, var) for name, var in FLAG_ENV.items()}
        values["headers"] = _headers(env.get("TRITON_HEADERS"))
        sources |= {name: var for name, var in {**ACCESS_ENV, **FLAG_ENV}.items() if values[name] is not None}
        if values["headers"] is not None:
            sources["headers"] = "TRITON_HEADERS"
        return cls(params=params, sources=sources, **values)

    def merged(self, over: Overrides) -> Overrides:
        """These overrides with those `over` sets on top."""
        changes = {
            f.name: getattr(over, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("params", "sources") and getattr(over, f.name) is not None
        }
        return dataclasses.replace(
            self,
            params={**self.params, **over.params},
            sources={**self.sources, **over.sources},
            **changes,
        )

    def apply(self, params: ServingParams) -> ServingParams:
        """`params` with the overridden keys, held to every rule of `ServingParams`; a violation
        raises ParamsError naming where the value came from."""
        if not self.params:
            return params
        try:
            return ServingParams.model_validate({**params.model_dump(), **self.params}, strict=False)
        except ValidationError as error:
            problems = []
            for item in error.errors():
                key = str(item["loc"][0]) if item["loc"] else ""
                message = str(item["msg"]).removeprefix("Value error, ")
                if key in self.params:
                    where = self.sources.get(key, f"serving.{key}")
                    problems.append(f"{where}={self.params[key]!r}: {message} (as serving.{key} in params.yaml)")
                else:
                    shown = ", ".join(f"{self.sources.get(k, k)}={v!r}" for k, v in self.params.items())
                    problems.append(f"serving: {message} (with {shown})")
            raise ParamsError("bad override: " + "; ".join(problems)) from None

    def request_headers(self) -> dict[str, str]:
        """The headers to send: the given ones and the bearer token."""
        headers = dict(self.headers or {})
        if self.auth_token:
            headers["Authorization"] = f"Bearer {self.auth_token}"
        return headers


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    if name not in env:
        return None
    value = env[name].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return None if value == "" else False
    raise ParamsError(f"{name}={env[name]!r}: use 1/true/yes/on or 0/false/no/off")


def _headers(raw: str | None) -> dict[str, str] | None:
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        raise ParamsError("TRITON_HEADERS must be a JSON object of header names to values") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise ParamsError("TRITON_HEADERS must be a JSON object of header names to string values")
    return parsed

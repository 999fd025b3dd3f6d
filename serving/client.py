"""A thin wrapper over tritonclient: connection settings from params + environment, bounded retries.

The code never assumes the server is local. URL, protocol, headers and TLS come from configuration;
credentials come only from environment variables (see `ClientSettings.from_params`), never from
params.yaml or code, and they never appear in a repr or a log line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from pipeline.params import ServingParams

log = logging.getLogger(__name__)

T = TypeVar("T")
Protocol = Literal["http", "grpc"]
_TRUE = {"1", "true", "yes", "on"}


class ServerUnreachable(ConnectionError):
    """Nothing answered at the configured URL after the bounded retries."""


class ClientError(RuntimeError):
    """The server answered, but refused or failed the call (e.g. a model that does not load)."""


@dataclass(frozen=True)
class ClientSettings:
    """How to reach a Triton server. `url` is host:port (tritonclient's form, no scheme)."""

    url: str
    protocol: Protocol = "http"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may carry credentials
    ssl: bool = False
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_insecure: bool = False  # HTTP only: skip certificate verification (testing against self-signed)
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.5

    @classmethod
    def from_params(cls, params: ServingParams, env: Mapping[str, str] | None = None) -> ClientSettings:
        """Params, overridden by the environment:

        TRITON_URL (host:port, or http[s]:// / grpc[s]:// URL; an https/grpcs scheme turns TLS on),
        TRITON_PROTOCOL (http|grpc), TRITON_HTTP_PORT / TRITON_GRPC_PORT (the local default URL),
        TRITON_HEADERS (JSON object of extra request headers), TRITON_AUTH_TOKEN (sent as
        `Authorization: Bearer <token>`), TRITON_SSL (1 = TLS), TRITON_SSL_CA_FILE,
        TRITON_SSL_CERT_FILE, TRITON_SSL_KEY_FILE, TRITON_SSL_INSECURE (1 = skip verification, HTTP),
        TRITON_RETRIES, TRITON_BACKOFF_S, TRITON_REQUEST_TIMEOUT_S.
        """
        env = os.environ if env is None else env
        protocol = env.get("TRITON_PROTOCOL", params.protocol)
        if protocol not in ("http", "grpc"):
            raise ValueError(f"TRITON_PROTOCOL must be http or grpc, got {protocol!r}")
        port = env.get("TRITON_HTTP_PORT", params.http_port) if protocol == "http" else None
        port = env.get("TRITON_GRPC_PORT", params.grpc_port) if port is None else port
        url, scheme_ssl = split_url(env.get("TRITON_URL") or params.url or f"127.0.0.1:{port}")
        return cls(
            url=url,
            protocol=protocol,
            headers=headers_from_env(env),
            ssl=scheme_ssl or env.get("TRITON_SSL", "").lower() in _TRUE,
            ssl_ca_file=env.get("TRITON_SSL_CA_FILE") or None,
            ssl_cert_file=env.get("TRITON_SSL_CERT_FILE") or None,
            ssl_key_file=env.get("TRITON_SSL_KEY_FILE") or None,
            ssl_insecure=env.get("TRITON_SSL_INSECURE", "").lower() in _TRUE,
            timeout_s=float(env.get("TRITON_REQUEST_TIMEOUT_S", params.request_timeout_s)),
            retries=int(env.get("TRITON_RETRIES", params.retries)),
            backoff_s=float(env.get("TRITON_BACKOFF_S", params.backoff_s)),
        )

    def describe(self) -> str:
        return f"{'https' if self.ssl and self.protocol == 'http' else self.protocol}://{self.url}"


def split_url(url: str) -> tuple[str, bool]:
    """`https://host:443/` -> ("host:443", True); `host:8000` -> ("host:8000", False)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rstrip("/"), False
    if scheme not in ("http", "https", "grpc", "grpcs"):
        raise ValueError(f"Triton URL scheme must be http, https, grpc or grpcs, got {url!r}")
    return rest.rstrip("/"), scheme in ("https", "grpcs")


def headers_from_env(env: Mapping[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    raw = env.get("TRITON_HEADERS")
    if raw:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError("TRITON_HEADERS must be a JSON object of header names to values") from None
        if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
            raise ValueError("TRITON_HEADERS must be a JSON object of header names to string values")
        headers.update(parsed)
    if env.get("TRITON_AUTH_TOKEN"):
        headers["Authorization"] = f"Bearer {env['TRITON_AUTH_TOKEN']}"
    return headers


def is_unreachable(error: BaseException) -> bool:
    """Connection-level failures worth a retry; a model error or a refusal is not one."""
    from tritonclient.utils import InferenceServerException

    if isinstance(error, InferenceServerException):
        return str(error.status()) == "StatusCode.UNAVAILABLE"
    return isinstance(error, ConnectionError | OSError) and not isinstance(error, TimeoutError)


class TritonClient:
    """One tritonclient connection. Not shared between threads: make one per thread."""

    def __init__(self, settings: ClientSettings):
        self.settings = settings
        if settings.protocol == "grpc":
            import tritonclient.grpc as module

            self._client = module.InferenceServerClient(
                settings.url,
                ssl=settings.ssl,
                root_certificates=settings.ssl_ca_file,
                private_key=settings.ssl_key_file,
                certificate_chain=settings.ssl_cert_file,
            )
        else:
            import tritonclient.http as module

            ssl_options = {
                key: value
                for key, value in (
                    ("ca_certs", settings.ssl_ca_file),
                    ("certfile", settings.ssl_cert_file),
                    ("keyfile", settings.ssl_key_file),
                )
                if value
            }
            self._client = module.InferenceServerClient(
                settings.url,
                connection_timeout=settings.timeout_s,
                network_timeout=settings.timeout_s,
                ssl=settings.ssl,
                ssl_options=ssl_options or None,
                insecure=settings.ssl_insecure,
            )
        self._module = module

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _kwargs(self, timeout_s: float | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": dict(self.settings.headers) or None}
        if self.settings.protocol == "grpc":
            kwargs["client_timeout"] = timeout_s or self.settings.timeout_s
        return kwargs

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying connection failures `retries` times with doubling backoff."""
        tries = self.settings.retries + 1
        for attempt in range(tries):
            try:
                return fn()
            except Exception as error:
                if not is_unreachable(error):
                    raise ClientError(f"{what} failed at {self.settings.describe()}: {_message(error)}") from error
                if attempt == tries - 1:
                    raise ServerUnreachable(
                        f"{what}: no Triton server answered at {self.settings.describe()} after {tries} "
                        f"tries ({_message(error)}). Start one (`make triton-start`) or set TRITON_URL."
                    ) from error
                wait = self.settings.backoff_s * 2**attempt
                log.warning(
                    "%s: server unreachable (%s); retry %d/%d in %.2fs", what, error, attempt + 1, tries - 1, wait
                )
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- server and model state -------------------------------------------------------------
    def is_live(self) -> bool:
        return bool(self.call("server liveness", lambda: self._client.is_server_live(**self._kwargs())))

    def is_ready(self) -> bool:
        return bool(self.call("server readiness", lambda: self._client.is_server_ready(**self._kwargs())))

    def model_ready(self, name: str, version: int | None = None) -> bool:
        v = "" if version is None else str(version)
        return bool(
            self.call(f"readiness of {name}:{v}", lambda: self._client.is_model_ready(name, v, **self._kwargs()))
        )

    def repository_index(self) -> list[dict[str, Any]]:
        """Every model version the server knows: name, version, state (READY, UNAVAILABLE, ...)."""
        if self.settings.protocol == "grpc":
            from google.protobuf import json_format

            index = self.call("repository index", lambda: self._client.get_model_repository_index(**self._kwargs()))
            return [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in index.models]
        return list(self.call("repository index", lambda: self._client.get_model_repository_index(**self._kwargs())))

    def load(
        self,
        name: str,
        config_json: str | None = None,
        timeout_s: float | None = None,
        files: dict[str, bytes] | None = None,
    ) -> None:
        """(Re)load a model; `config_json` overrides the config on disk (e.g. its version_policy).
        With `files` (`{"file:<version>/<name>": bytes}`) the server loads those instead of the
        repository's folder: nothing is read from or written to the repository."""
        kwargs = self._kwargs(timeout_s)
        if files:
            kwargs["files"] = files
        self.call(f"load of {name}", lambda: self._client.load_model(name, config=config_json, **kwargs))

    def model_config(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The config the server runs a loaded model with (JSON form: max_batch_size, inputs, ...)."""
        v = "" if version is None else str(version)
        if self.settings.protocol == "grpc":
            response = self.call(
                f"config of {name}", lambda: self._client.get_model_config(name, v, as_json=True, **self._kwargs())
            )
            return dict(response.get("config", {}))
        return dict(self.call(f"config of {name}", lambda: self._client.get_model_config(name, v, **self._kwargs())))

    def unload(self, name: str) -> None:
        self.call(f"unload of {name}", lambda: self._client.unload_model(name, **self._kwargs()))

    # --- inference --------------------------------------------------------------------------
    def infer(
        self,
        name: str,
        rows: np.ndarray,
        *,
        version: int | None = None,
        input_name: str = "input",
        output_name: str = "probabilities",
    ) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError(f"rows must be 2-D [n, n_features], got shape {rows.shape}")
        tensor = self._module.InferInput(input_name, list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        wanted = [self._module.InferRequestedOutput(output_name)]
        kwargs = self._kwargs()
        v = "" if version is None else str(version)
        result = self.call(
            f"inference on {name}:{v or 'latest'}",
            lambda: self._client.infer(name, [tensor], model_version=v, outputs=wanted, **kwargs),
        )
        return result.as_numpy(output_name)

    def predict(self, name: str, rows: np.ndarray, version: int | None = None) -> np.ndarray:
        """Class probabilities [n, n_classes] for float32 rows [n, n_features]."""
        return self.infer(name, rows, version=version)


def _message(error: BaseException) -> str:
    text = str(error) or repr(error)
    return text.strip().splitlines()[0][:500] if text.strip() else type(error).__name__


def predict(
    rows: np.ndarray,
    model_name: str,
    params: ServingParams | None = None,
    *,
    settings: ClientSettings | None = None,
    version: int | None = None,
) -> np.ndarray:
    """Score rows with the model Triton serves (the champion): float32 [n, n_features] -> [n, n_classes]."""
    settings = settings or ClientSettings.from_params(params or ServingParams())
    with TritonClient(settings) as client:
        return client.predict(model_name, rows, version=version)

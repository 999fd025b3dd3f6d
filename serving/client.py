"""A thin wrapper over tritonclient: connection settings from params + overrides, bounded retries.

The code never assumes the server is local. URL, protocol, headers and TLS come from configuration;
credentials come only from the environment or an Airflow Connection (serving/overrides.py), never
from params.yaml or code, and they never appear in a repr or a log line. Credentials are not sent over
plain HTTP or gRPC unless the configuration explicitly allows it.

The model-control key (serving.control) goes with every call: the local server refuses loading,
unloading and the repository index without it. When the client talks to the local server of
params.yaml `serving:`, the key comes from that server's state folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from pipeline.errors import StageError
from pipeline.params import ParamsError
from serving import control
from serving.overrides import Overrides
from serving.params import ServingParams

if TYPE_CHECKING:
    from serving.server import ServerSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
Protocol = Literal["http", "grpc"]
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# Headers that carry credentials: never sent in clear text unless allowed (allow_insecure_token).
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})
SCHEMES = {"http": ("http", False), "https": ("http", True), "grpc": ("grpc", False), "grpcs": ("grpc", True)}


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
    control_key: str | None = field(default=None, repr=False)  # sent as serving.control.HEADER
    allow_insecure_token: bool = False  # send credentials without TLS (only when explicitly configured)
    metrics_url: str | None = None  # Triton's Prometheus endpoint (live counters in `status`)

    def __post_init__(self) -> None:
        if self.ssl or self.allow_insecure_token:
            return
        credentials = sorted(name for name in self.headers if name.lower() in CREDENTIAL_HEADERS)
        if self.control_key and self.host not in LOOPBACK:
            credentials.append("the model-control key")
        if credentials:
            raise ParamsError(
                f"refusing to send {' and '.join(credentials)} to {self.url} without TLS ({self.protocol}://): "
                "use an https:// or grpcs:// URL (TRITON_URL, or the Airflow Connection's host, schema or "
                "type), or turn TLS on with TRITON_SSL=1 / an ssl_* Connection extra. Only on a network "
                "path you trust, allow clear text explicitly with TRITON_ALLOW_INSECURE_TOKEN=1 "
                "(Connection extra allow_insecure_token: true)."
            )

    @property
    def host(self) -> str:
        return self.url.rsplit(":", 1)[0] if ":" in self.url.lstrip("[") else self.url

    @classmethod
    def resolve(cls, params: ServingParams, overrides: Overrides, root: Path | None = None) -> ClientSettings:
        """Params `serving:` with `overrides` (serving/overrides.py: the environment, an Airflow
        Connection): the URL (host:port, or an http[s]:// / grpc[s]:// URL whose scheme picks the
        protocol, https/grpcs turning TLS on; default: the local server's port for the protocol),
        headers and bearer token (over TLS only unless `allow_insecure_token`), TLS files (any of
        them turns TLS on), the model-control key (default: the local server's key file in
        `state_dir`, relative to `root`, when the URL is that server's) and the metrics URL
        (default: the local server's metrics port, when the URL is that server's)."""
        resolved = overrides.apply(params)
        protocol: Protocol = resolved.protocol
        scheme = resolved.url.partition("://")[0] if resolved.url and "://" in resolved.url else None
        if scheme in SCHEMES:
            given = overrides.params.get("protocol")
            if given and SCHEMES[scheme][0] != given:
                where = overrides.sources.get("protocol", "serving.protocol")
                raise ParamsError(
                    f"{where}={given!r} contradicts the {scheme}:// URL {resolved.url!r}; drop one of them"
                )
            protocol = "grpc" if SCHEMES[scheme][0] == "grpc" else "http"
        local_port = resolved.http_port if protocol == "http" else resolved.grpc_port
        url, scheme_ssl = split_url(resolved.url or f"127.0.0.1:{local_port}")
        ssl_files = (overrides.ssl_ca_file, overrides.ssl_cert_file, overrides.ssl_key_file)
        insecure = bool(overrides.ssl_insecure)
        local = _is_local(url, local_port)
        key = overrides.control_key
        if key is None and local:
            state_dir = Path(resolved.state_dir)
            key = control.read_key(state_dir if root is None or state_dir.is_absolute() else root / state_dir)
        metrics_url = overrides.metrics_url or (f"http://127.0.0.1:{resolved.metrics_port}/metrics" if local else None)
        return cls(
            url=url,
            protocol=protocol,
            headers=overrides.request_headers(),
            ssl=scheme_ssl or bool(overrides.ssl) or insecure or any(ssl_files),
            ssl_ca_file=overrides.ssl_ca_file,
            ssl_cert_file=overrides.ssl_cert_file,
            ssl_key_file=overrides.ssl_key_file,
            ssl_insecure=insecure,
            timeout_s=resolved.request_timeout_s,
            retries=resolved.retries,
            backoff_s=resolved.backoff_s,
            control_key=key,
            allow_insecure_token=bool(overrides.allow_insecure_token),
            metrics_url=metrics_url,
        )

    @classmethod
    def from_params(cls, params: ServingParams, env: Mapping[str, str] | None = None) -> ClientSettings:
        """Params with the `TRITON_*` variables of `env` (default: this process's environment):
        TRITON_URL, TRITON_PROTOCOL, TRITON_HTTP_PORT / TRITON_GRPC_PORT (the local default URL),
        TRITON_HEADERS (JSON object of extra request headers), TRITON_AUTH_TOKEN, TRITON_SSL (1 =
        TLS), TRITON_SSL_CA_FILE, TRITON_SSL_CERT_FILE, TRITON_SSL_KEY_FILE, TRITON_SSL_INSECURE,
        TRITON_ALLOW_INSECURE_TOKEN, TRITON_CONTROL_KEY, TRITON_STATE_DIR, TRITON_METRICS_URL,
        TRITON_RETRIES, TRITON_BACKOFF_S, TRITON_REQUEST_TIMEOUT_S (see `resolve`)."""
        return cls.resolve(params, Overrides.from_env(os.environ if env is None else env))

    @classmethod
    def local(cls, server: ServerSettings, protocol: Protocol = "http", **kwargs: Any) -> ClientSettings:
        """Settings for the local server `server` (a running one: its key file must exist)."""
        port = server.http_port if protocol == "http" else server.grpc_port
        key = server.read_control_key()
        if key is None:
            raise ParamsError(f"no model-control key in {server.state_dir}: is the server there running?")
        return cls(
            url=f"127.0.0.1:{port}", protocol=protocol, control_key=key, metrics_url=server.metrics_url, **kwargs
        )

    def describe(self) -> str:
        return f"{self.protocol}{'s' if self.ssl else ''}://{self.url}"

    def request_headers(self) -> dict[str, str]:
        """Every header a call sends: the configured ones and the model-control key."""
        headers = dict(self.headers)
        if self.control_key:
            headers.update(control.header(self.protocol, self.control_key))
        return headers


def _is_local(url: str, port: int) -> bool:
    host, _, url_port = url.rpartition(":")
    return host in LOOPBACK and url_port == str(port)


def split_url(url: str) -> tuple[str, bool]:
    """`https://host:443/` -> ("host:443", True); `host:8000` -> ("host:8000", False)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rstrip("/"), False
    if scheme not in SCHEMES:
        raise ParamsError(f"Triton URL scheme must be http, https, grpc or grpcs, got {url!r}")
    return rest.rstrip("/"), SCHEMES[scheme][1]


def is_unreachable(error: BaseException) -> bool:
    """Connection-level failures worth a retry; a model error or a refusal is not one."""
    from tritonclient.utils import InferenceServerException

    if isinstance(error, InferenceServerException):
        # A restricted gRPC call is refused with UNAVAILABLE too: that is an answer, not an outage.
        return str(error.status()) == "StatusCode.UNAVAILABLE" and not is_restricted(error)
    return isinstance(error, ConnectionError | OSError) and not isinstance(error, TimeoutError)


def is_restricted(error: BaseException) -> bool:
    """Triton refused the call for want of the restricted-API header (HTTP 403 or gRPC)."""
    return "is restricted, expecting header" in str(error)


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

            self._client = self._http_client(settings.timeout_s)
        self._module = module

    def _http_client(self, network_timeout_s: float) -> Any:
        """An HTTP client; its timeout is per client, not per call (tritonclient's HTTP API)."""
        import tritonclient.http

        settings = self.settings
        ssl_options = {
            key: value
            for key, value in (
                ("ca_certs", settings.ssl_ca_file),
                ("certfile", settings.ssl_cert_file),
                ("keyfile", settings.ssl_key_file),
            )
            if value
        }
        return tritonclient.http.InferenceServerClient(
            settings.url,
            connection_timeout=settings.timeout_s,
            network_timeout=network_timeout_s,
            ssl=settings.ssl,
            ssl_options=ssl_options or None,
            insecure=settings.ssl_insecure,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _kwargs(self, timeout_s: float | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self.settings.request_headers() or None}
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
                    hint = _RESTRICTED_HINT if is_restricted(error) else ""
                    raise ClientError(
                        f"{what} failed at {self.settings.describe()}: {_message(error)}{hint}"
                    ) from error
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
        repository's folder: nothing is read from or written to the repository.

        A load may take far longer than a request (`timeout_s`, the push's load timeout): over gRPC
        that is the call's deadline, over HTTP a client of its own with that network timeout."""
        kwargs = self._kwargs(timeout_s)
        if files:
            kwargs["files"] = files
        if self.settings.protocol == "grpc" or timeout_s is None:
            self.call(f"load of {name}", lambda: self._client.load_model(name, config=config_json, **kwargs))
            return
        client = self._http_client(timeout_s)
        try:
            self.call(f"load of {name}", lambda: client.load_model(name, config=config_json, **kwargs))
        finally:
            client.close()

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
        rows: np.ndarray | Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        input_name: str = "input",
        output_name: str = "probabilities",
        request_id: str = "",
    ) -> np.ndarray:
        """`rows`: float32 rows for the input `input_name`, or {input name: rows} for a model with
        several inputs (float rows go as FP32, text as BYTES). `request_id`: the request's id, the
        key a label for it is sent with later (serving.sample)."""
        named = rows if isinstance(rows, Mapping) else {input_name: rows}
        tensors = []
        for tensor_name, values in named.items():
            values = np.asarray(values)
            text = values.dtype.kind in "OUS"
            values = values.astype(object) if text else np.ascontiguousarray(values, dtype=np.float32)
            if values.ndim != 2:
                raise StageError(f"rows must be 2-D [n, n_features], got shape {values.shape}")
            tensor = self._module.InferInput(tensor_name, list(values.shape), "BYTES" if text else "FP32")
            tensor.set_data_from_numpy(values)
            tensors.append(tensor)
        wanted = [self._module.InferRequestedOutput(output_name)]
        kwargs = self._kwargs()
        v = "" if version is None else str(version)
        result = self.call(
            f"inference on {name}:{v or 'latest'}",
            lambda: self._client.infer(name, tensors, model_version=v, outputs=wanted, request_id=request_id, **kwargs),
        )
        return result.as_numpy(output_name)

    def predict(
        self, name: str, rows: np.ndarray | Mapping[str, np.ndarray], version: int | None = None, request_id: str = ""
    ) -> np.ndarray:
        """Class probabilities [n, n_classes] for float32 rows [n, n_features] (or {input: rows})."""
        return self.infer(name, rows, version=version, request_id=request_id)


# The id of every request the project itself sends (smoke tests, the gate scoring the champion,
# `serving sample`): the live sample keeps none of them (serving/backend/model.py, same prefix).
INTERNAL_REQUEST_PREFIX = "pipeline:"
INTERNAL_REQUEST_ID = INTERNAL_REQUEST_PREFIX + "check"

_RESTRICTED_HINT = (
    ". The server allows model control only with its key: set TRITON_CONTROL_KEY (or the Airflow "
    "Connection's control_key extra); the local server keeps its key in <serving.state_dir>/" + control.KEY_FILE
)


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

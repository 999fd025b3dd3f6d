"""S3-compatible object storage for `pipeline.sources`: the filesystem, its settings, its errors.

Objects go through fsspec's `s3fs` (the library DVC's own S3 remote uses, so it is installed
already): it reads a given object version (`VersionId`), which pyarrow's own S3FileSystem cannot,
and its files buffer ranged reads so Parquet's footer-then-columns reads cost few requests. The
endpoint and credentials come from the environment only, as botocore reads them
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
`AWS_DEFAULT_REGION`; `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` for an S3-compatible server),
or from a mapping of those names a caller passes: never from params, never in a message. Requests
are retried by botocore ("standard" mode, exponential backoff with jitter, `AWS_MAX_ATTEMPTS`
attempts, 4 unless set), then fail with one line that names the object and the cause.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pipeline.tables import TableError

ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # an S3-compatible endpoint, first set wins
DEFAULT_ATTEMPTS = 4  # requests tried per call (botocore's standard retry mode) unless AWS_MAX_ATTEMPTS says
CONNECT_TIMEOUT_S = 10  # seconds to open a connection to the endpoint
READ_TIMEOUT_S = 60  # seconds to wait for a response's bytes


class SourceError(TableError):
    """The source cannot be listed or an object cannot be read; the message names it and the cause."""


def explain(what: str, error: BaseException) -> str:
    """One line on why `what` (an object or a source URL) could not be read: the S3 error code
    and what to do, never a credential."""
    code = _error_code(error)
    text = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    if code in ("NoSuchBucket",):
        hint = "no such bucket (create it, or fix the bucket name in data.source)"
    elif code in ("NoSuchKey", "NoSuchVersion", "404", "NotFound") or isinstance(error, FileNotFoundError):
        hint = "no such key (or version): the object is not in the bucket (fix data.source, or restore the object)"
    elif code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled") or isinstance(error, PermissionError):
        hint = "access denied: the credentials may not read it (check the key's policy and the bucket's)"
    elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "ExpiredToken"):
        hint = (
            f"the credentials were refused ({code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the Connection"
        )
    elif _names(error) & {"NoCredentialsError", "PartialCredentialsError"}:
        hint = (
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the worker's "
            "environment, or add the Airflow Connection aws_default"
        )
    elif _names(error) & {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionError", "ReadTimeoutError"}:
        hint = f"the endpoint cannot be reached after {_attempts()} attempts (is it up, and is AWS_ENDPOINT_URL right?)"
        text = text.replace('"', "")
    else:
        hint = "see the cause"
    return f"{what}: {hint}. Cause: {text}"


def _attempts(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        return max(1, int(env.get("AWS_MAX_ATTEMPTS") or DEFAULT_ATTEMPTS))
    except ValueError:
        return DEFAULT_ATTEMPTS


def s3_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """s3fs settings from the environment: the endpoint, timeouts and bounded retries. Credentials
    are not among them: botocore reads those from the environment itself, so they are never held
    (or pickled, or printed) with the filesystem's settings."""
    env = os.environ if env is None else env
    endpoint = next((env[k] for k in ENDPOINT_ENVS if env.get(k)), None)
    return {
        "endpoint_url": endpoint,
        "version_aware": True,  # listings carry VersionId and reads name it (a plain bucket answers "null")
        "use_listings_cache": False,  # every listing asks the bucket (a poller lists the same prefix again)
        "config_kwargs": {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
            "retries": {"mode": env.get("AWS_RETRY_MODE") or "standard", "max_attempts": _attempts(env)},
        },
    }


def filesystem(env: Mapping[str, str] | None = None):
    """The S3 filesystem for `env` (None: this process's environment, whose credentials botocore
    reads itself; a mapping: its credentials are passed explicitly)."""
    import s3fs  # imported here: a local source never needs it

    options = s3_options(env)
    if env is not None:
        options.update(
            key=env.get("AWS_ACCESS_KEY_ID"),
            secret=env.get("AWS_SECRET_ACCESS_KEY"),
            token=env.get("AWS_SESSION_TOKEN"),
        )
        if env.get("AWS_DEFAULT_REGION"):
            options["client_kwargs"] = {"region_name": env["AWS_DEFAULT_REGION"]}
    fs = s3fs.S3FileSystem(**options)
    fs.retries = 1  # s3fs's own retry loop off: botocore's (s3_options) is the one bounded, backed-off loop
    return fs


def _error_code(error: BaseException) -> str | None:
    for e in (error, error.__cause__, error.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
    return None


def _names(error: BaseException) -> set[str]:
    names: set[str] = set()
    for e in (error, error.__cause__, error.__context__):
        if e is not None:
            names.update(t.__name__ for t in type(e).__mro__)
    return names


class ExplainedFile:
    """An open s3fs file whose read errors are SourceErrors naming the object (pyarrow passes a
    Python file's errors through as they are)."""

    def __init__(self, raw: Any, what: str) -> None:
        self._raw, self._what = raw, what

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def read(self, size: int = -1) -> bytes:
        try:
            return self._raw.read(size)
        except Exception as error:  # s3fs and botocore raise many types; explain() sorts them
            raise SourceError(explain(self._what, error)) from None

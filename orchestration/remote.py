"""The DVC remote the stage tasks share: where every output and DVC's run cache travel between
workers that share no disk.

A local folder by default (`airflow.dvc_remote`, relative to the project), or any URL DVC knows
(`s3://bucket/path`). `RETRAIN_DVC_REMOTE` overrides it per worker. Secrets never come from
params or code: S3 credentials come from the worker's environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, ... as boto reads them), or from the Airflow Connection
`airflow.dvc_remote_conn_id` (login = access key id, password = secret access key, extra
`region_name`, `endpoint_url`). They go to DVC as in-memory config only: never written to a
config file, a commit, a log line or an XCom. An S3-compatible endpoint (MinIO, a test server)
comes from the Connection's `endpoint_url` or `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import StageError

NAME = "retrain"  # the remote's name in the in-memory DVC config of a checkout
URL_ENV = "RETRAIN_DVC_REMOTE"  # overrides airflow.dvc_remote
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
SECRET_KEYS = ("access_key_id", "secret_access_key", "session_token")  # DVC config keys never written to a file


class RemoteError(StageError):
    """The DVC remote cannot be reached or refused us; the message names it and the cause."""


def redact(url: str) -> str:
    """A URL fit for a log line: `https://user:token@host/x` -> `https://***@host/x`."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]+@", r"\1***@", url)


@dataclass(frozen=True)
class DvcRemote:
    url: str  # an absolute folder or a URL (s3://bucket/path)
    endpoint_url: str | None = None  # S3-compatible endpoint; None = AWS
    region: str | None = None
    # From an Airflow Connection only; kept out of repr so that no log or traceback shows them.
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_local(self) -> bool:
        return "://" not in self.url

    def describe(self) -> str:
        where = f" (endpoint {redact(self.endpoint_url)})" if self.endpoint_url else ""
        return f"{redact(self.url)}{where}"

    def dvc_config(self) -> dict[str, Any]:
        """The remote as DVC config (in memory, merged over the repository's files)."""
        remote: dict[str, Any] = {"url": self.url}
        if self.endpoint_url:
            remote["endpointurl"] = self.endpoint_url
        if self.region:
            remote["region"] = self.region
        remote.update(self.credentials)
        return {"core": {"remote": NAME}, "remote": {NAME: remote}}


def resolve(
    project: Path,
    configured: str | None,
    env: Mapping[str, str] | None = None,
    connection: Mapping[str, Any] | None = None,
) -> DvcRemote | None:
    """The remote from `RETRAIN_DVC_REMOTE` or `airflow.dvc_remote` (a relative folder is relative
    to the project), with endpoint, region and credentials from `connection` (a dict with
    `login`, `password` and `extra`) or the environment. None = the repository's own default
    remote (`.dvc/config`)."""
    env = os.environ if env is None else env
    url = env.get(URL_ENV) or configured
    if not url:
        return None
    if "://" not in url:
        return DvcRemote(url=str((project / url).resolve()))
    connection = connection or {}
    extra = connection.get("extra") or {}
    endpoint = extra.get("endpoint_url") or next((env[k] for k in ENDPOINT_ENVS if env.get(k)), None)
    credentials = {}
    if connection.get("login") or connection.get("password"):
        if not (connection.get("login") and connection.get("password")):
            raise RemoteError(
                f"DVC remote {redact(url)}: the Airflow Connection for it needs both login (access key id) "
                "and password (secret access key)"
            )
        credentials = {"access_key_id": str(connection["login"]), "secret_access_key": str(connection["password"])}
        if extra.get("aws_session_token"):
            credentials["session_token"] = str(extra["aws_session_token"])
    return DvcRemote(url=url, endpoint_url=endpoint, region=extra.get("region_name"), credentials=credentials)


def explain(remote: DvcRemote | None, error: BaseException) -> str:
    """What went wrong talking to the remote, in words a person can act on (never a secret)."""
    where = f"DVC remote {remote.describe()}" if remote else "the repository's default DVC remote"
    text = f"{type(error).__name__}: {error}"
    chain = [error, *(e for e in (error.__cause__, error.__context__) if e is not None)]
    names = {type(e).__name__ for e in chain}
    joined = " ".join(str(e) for e in chain)
    if "NoCredentialsError" in names or "Unable to locate credentials" in joined:
        hint = (
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the worker's "
            "environment, or add the Airflow Connection named by airflow.dvc_remote_conn_id"
        )
    elif re.search(r"InvalidAccessKeyId|SignatureDoesNotMatch|InvalidClientTokenId|AccessDenied|Forbidden|403", joined):
        hint = "the S3 credentials were refused (wrong key id or secret, or no access to the bucket)"
    elif re.search(r"NoSuchBucket|does not exist|No such file or directory|FileNotFoundError", joined + str(names)):
        hint = "it does not exist (create the bucket or folder, or fix airflow.dvc_remote)"
    elif re.search(r"Connect|connection|Timeout|timed out|Name or service not known|unreachable", joined + str(names)):
        hint = "it cannot be reached (is the endpoint up and the network open?)"
    else:
        hint = "see the cause"
    return f"{where}: {hint}. Cause: {redact(text)[:500]}"

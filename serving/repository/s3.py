"""A model repository under an S3 prefix, written through the S3 API from whatever worker pushes.

URLs, as Triton's `--model-repository` spells them:

    s3://<bucket>/<prefix>                            endpoint from boto3's configuration chain
    s3://http(s)://<host>:<port>/<bucket>/<prefix>    an explicit endpoint (MinIO, a local S3 API)

Credentials come only from boto3's chain (the standard `AWS_*` variables, a profile, an instance
role); they are never part of the URL, params or a log line. Endpoint overrides may also come
from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (read by boto3).

S3 has no rename, so a version folder is made whole differently: a `.partial` marker is written
first and deleted last. A folder that still holds it (an upload cut off by a crash) is not a
finished version; it is never listed as one, and the next push under the lock removes it.
Exclusion between workers on different hosts uses a lease object written with S3's conditional
writes (`If-None-Match: *` to take it, `If-Match: <etag>` to take over an expired one).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from serving.repository.store import RepositoryError

log = logging.getLogger(__name__)

T = TypeVar("T")
PARTIAL = ".partial"
DEFAULT_LEASE_S = 600.0


def parse_s3_url(url: str) -> tuple[str | None, str, str]:
    """`s3://[http(s)://host:port/]bucket/prefix` -> (endpoint or None, bucket, prefix without slashes)."""
    if not url.startswith("s3://"):
        raise RepositoryError(f"{url!r} is not an s3:// URL")
    rest = url[len("s3://") :]
    endpoint = None
    for scheme in ("http://", "https://"):
        if rest.startswith(scheme):
            host, sep, rest = rest[len(scheme) :].partition("/")
            if not host or not sep:
                raise RepositoryError(f"{url!r}: expected s3://{scheme}<host>:<port>/<bucket>/<prefix>")
            endpoint = scheme + host
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise RepositoryError(f"{url!r} names no bucket: use s3://<bucket>/<prefix>")
    return endpoint, bucket, prefix.strip("/")


class S3Store:
    """Objects under s3://bucket/prefix/."""

    def __init__(self, url: str, *, client: Any = None, lease_s: float = DEFAULT_LEASE_S):
        self.location = url
        self.endpoint, self.bucket, self.prefix = parse_s3_url(url)
        self.lease_s = lease_s
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            # A session of its own: boto3's default one caches the credentials it found first.
            self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint)
        return self._client

    def _key(self, key: str) -> str:
        return "/".join(part for part in (self.prefix, key.strip("/")) if part)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one S3 call; failures a person can fix become a RepositoryError naming the cause."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return fn()
        except NoCredentialsError:
            raise RepositoryError(
                f"{what} on {self.location}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or a profile / instance role) in the environment of the worker"
            ) from None
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "?")
            if code in ("NoSuchKey", "404", "PreconditionFailed", "412"):
                raise
            raise RepositoryError(f"{what} on {self.location} failed: {code}: {error}") from None
        except BotoCoreError as error:
            raise RepositoryError(f"{what} on {self.location} failed: {error}") from None

    def _keys(self, key: str) -> list[str]:
        """Every object key under folder `key`, relative to it."""
        base = self._key(key) + "/" if self._key(key) else ""
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call(f"listing {key or '/'}", functools.partial(self._list, base, dict(token)))
            found.extend(item["Key"][len(base) :] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def _list(self, prefix: str, token: dict[str, str]) -> Any:
        return self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, **token)

    def _grouped(self, key: str) -> dict[str, set[str]]:
        groups: dict[str, set[str]] = {}
        for rel in self._keys(key):
            head, sep, tail = rel.partition("/")
            if sep and head and not head.startswith("."):
                groups.setdefault(head, set()).add(tail)
        return groups

    def all_folders(self, key: str) -> list[str]:
        return sorted(self._grouped(key))

    def folders(self, key: str) -> list[str]:
        return sorted(name for name, files in self._grouped(key).items() if PARTIAL not in files)

    def read(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            body = self._call(f"reading {key}", lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key)))
        except ClientError:
            return None
        return body["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        # One PUT replaces an object whole: readers see the old bytes or the new ones.
        self._call(f"writing {key}", lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data))

    def write_folder(self, key: str, files: Mapping[str, bytes]) -> None:
        if self._keys(key):
            raise RepositoryError(f"{self.location}/{key} already exists; the repository changed under us, retry")
        try:
            self.write(f"{key}/{PARTIAL}", b"")
            for name, data in files.items():
                self.write(f"{key}/{name}", data)
            self._call(
                f"finishing {key}",
                lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(f"{key}/{PARTIAL}")),
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.remove_folder(key)
            raise

    def read_folder(self, key: str) -> dict[str, bytes]:
        files = {}
        for rel in self._keys(key):
            if rel != PARTIAL:
                data = self.read(f"{key}/{rel}")
                if data is not None:
                    files[rel] = data
        return files

    def remove_folder(self, key: str) -> None:
        """Marked partial first, so that no reader takes the rest for a whole folder."""
        keys = [rel for rel in self._keys(key) if rel != PARTIAL]
        if not keys:
            keys = self._keys(key)
            if not keys:
                return
        self.write(f"{key}/{PARTIAL}", b"")
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(f"{key}/{rel}")} for rel in keys[start : start + 1000]]
            self._call(
                f"removing {key}",
                functools.partial(self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch}),
            )
        self._call(
            f"removing {key}",
            lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(f"{key}/{PARTIAL}")),
        )

    def make_root(self) -> None:
        """A zero-byte `<prefix>/` object (S3's folder marker): Triton refuses to start on a
        prefix that has no object under it."""
        if self.prefix and not self._keys(""):
            self._call(
                "creating the repository", lambda: self.client.put_object(Bucket=self.bucket, Key=self.prefix + "/")
            )

    # --- the lease ------------------------------------------------------------------------------
    def _lease_body(self) -> bytes:
        owner = f"{socket.gethostname()}:{os.getpid()}"
        return json.dumps({"owner": owner, "expires_at": time.time() + self.lease_s}).encode()

    def _take(self, lock_key: str) -> str | None:
        """The new lease's ETag, or None when a live lease is held by someone else."""
        from botocore.exceptions import ClientError

        put = self.client.put_object
        try:
            return self._call(
                "taking the lock",
                lambda: put(Bucket=self.bucket, Key=lock_key, Body=self._lease_body(), IfNoneMatch="*"),
            )["ETag"]
        except ClientError:
            pass  # held: see whether its lease ran out
        try:
            held = self._call("reading the lock", lambda: self.client.get_object(Bucket=self.bucket, Key=lock_key))
        except ClientError:
            return None  # released meanwhile: try again
        lease = json.loads(held["Body"].read() or b"{}")
        if float(lease.get("expires_at", 0)) > time.time():
            return None
        log.warning("taking over the expired lock %s of %s", lock_key, lease.get("owner", "?"))
        try:
            return self._call(
                "taking over the lock",
                lambda: put(Bucket=self.bucket, Key=lock_key, Body=self._lease_body(), IfMatch=held["ETag"]),
            )["ETag"]
        except ClientError:
            return None  # someone else took it over first

    @contextlib.contextmanager
    def lock(self, key: str, timeout_s: float) -> Iterator[None]:
        lock_key = self._key(f".{key}.lock")
        deadline = time.monotonic() + timeout_s
        while (etag := self._take(lock_key)) is None:
            if time.monotonic() > deadline:
                raise RepositoryError(
                    f"another push, rollback or prune of {key} holds s3://{self.bucket}/{lock_key} (it expires "
                    f"{self.lease_s:.0f}s after it was taken); retry when it is done"
                )
            time.sleep(0.5)
        try:
            yield
        finally:
            from botocore.exceptions import ClientError

            try:
                self.client.delete_object(Bucket=self.bucket, Key=lock_key, IfMatch=etag)
            except ClientError as error:  # the lease expired and another writer took it over
                log.warning("could not release %s: %s", lock_key, error)

"""Where the raw table comes from: a local file or folder, or objects in S3-compatible storage.

A source is listed into `SourceObject`s (url, size, version id / ETag, Hive partition values), in
one order whichever store holds it, and each object is opened as a pyarrow random-access file at
the version it was listed with. Nothing here needs Airflow: Spark executors and stage processes
call `list_source` and `open_object` as they are.

Object storage goes through fsspec's `s3fs` (the library DVC's own S3 remote uses, so it is
installed already): it reads a given object version (`VersionId`), which pyarrow's own
S3FileSystem cannot, and its files buffer ranged reads so Parquet's footer-then-columns reads
cost few requests. The endpoint and credentials come from the environment only, as botocore reads
them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
`AWS_DEFAULT_REGION`; `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` for an S3-compatible server):
never from params, and never in a message. Requests are retried by botocore ("standard" mode,
exponential backoff with jitter, `AWS_MAX_ATTEMPTS` attempts, 4 unless set), then fail with one
line that names the object and the cause.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.tables import TableError

TABLE_SUFFIXES = (".parquet", ".csv")
SCHEMES = ("s3",)  # object stores this module reads (URL scheme of data.source)
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # an S3-compatible endpoint, first set wins
DEFAULT_ATTEMPTS = 4  # requests tried per call (botocore's standard retry mode) unless AWS_MAX_ATTEMPTS says
CONNECT_TIMEOUT_S = 10  # seconds to open a connection to the endpoint
READ_TIMEOUT_S = 60  # seconds to wait for a response's bytes
BLOCK_BYTES = 8 << 20  # bytes fetched per ranged read of an object (a read-ahead buffer of this size)


class SourceError(TableError):
    """The source cannot be listed or an object cannot be read; the message names it and the cause."""


@dataclass(frozen=True)
class SourceObject:
    """One file of a source, pinned: the bytes it names are the ones `open_object` reads."""

    url: str  # s3://bucket/key, or a local file's path
    size: int  # bytes
    version_id: str | None = None  # the object's version in a versioned bucket; None: unversioned, or local
    etag: str | None = None  # the object's S3 ETag (no quotes); None for a local file
    partition: tuple[tuple[str, str], ...] = ()  # Hive-style key=value folders below the source, outermost first

    @property
    def is_remote(self) -> bool:
        return is_remote(self.url)

    @property
    def format(self) -> str:
        """`parquet` or `csv`, from the name."""
        return "parquet" if self.url.lower().endswith(".parquet") else "csv"

    @property
    def path(self) -> Path:
        """A local object's path (an object in a bucket has none)."""
        if self.is_remote:
            raise SourceError(f"{self.url}: an object in a bucket has no local path; open it with open_object")
        return Path(self.url)

    def describe(self) -> str:
        """The object as a message names it: its URL, and the version read when pinned to one."""
        return f"{self.url} (version {self.version_id})" if self.version_id else self.url

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (what a manifest of the run's input lists)."""
        return {
            "url": self.url,
            "size": self.size,
            "version_id": self.version_id,
            "etag": self.etag,
            "partition": dict(self.partition),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> SourceObject:
        return cls(
            url=str(record["url"]),
            size=int(record["size"]),
            version_id=record.get("version_id"),
            etag=record.get("etag"),
            partition=tuple((str(k), str(v)) for k, v in (record.get("partition") or {}).items()),
        )


def is_remote(source: str | Path) -> bool:
    """A URL (`s3://bucket/prefix/`) rather than a local path."""
    return "://" in str(source)


def list_source(source: str | Path | Iterable[SourceObject]) -> list[SourceObject]:
    """The CSV/Parquet objects a source names, in order: the file itself, or every .csv/.parquet
    file below a folder or prefix (Hive `key=value/` folders included; names starting with `.`
    or `_`, such as `_SUCCESS` or `_temporary/`, skipped), sorted by their path below it. An
    iterable of objects (a pinned listing) is returned as it is."""
    if not isinstance(source, str | Path):
        return list(source)
    if is_remote(source):
        return _list_remote(str(source))
    return _list_local(Path(source))


def open_object(obj: SourceObject) -> pa.NativeFile:
    """A random-access file of the object's bytes at its pinned version; close it after use. An
    object whose bytes changed since it was listed (an unversioned bucket, a local file) is an
    error that says so, rather than a silently different input."""
    if not obj.is_remote:
        try:
            file = pa.OSFile(obj.url, "rb")
        except OSError as error:
            raise SourceError(f"{obj.url}: cannot be read ({error}); check data.source") from None
        if file.size() != obj.size:
            file.close()
            raise SourceError(f"{obj.url}: {file.size()} bytes now, {obj.size} when listed; the file changed")
        return file
    fs = _filesystem(obj.url)
    try:
        raw = fs.open(_fs_path(obj.url), "rb", version_id=obj.version_id, block_size=BLOCK_BYTES)
    except Exception as error:  # s3fs and botocore raise many types; explain() sorts them
        raise SourceError(explain(obj.describe(), error)) from None
    etag = _etag(raw.details.get("ETag"))
    if (obj.etag and etag and etag != obj.etag) or raw.size != obj.size:
        raw.close()
        raise SourceError(
            f"{obj.describe()}: rewritten since it was listed (ETag {etag}, {raw.size} bytes; listed as "
            f"ETag {obj.etag}, {obj.size} bytes); the bucket keeps no older version to read, so list the source again"
        )
    return pa.PythonFile(_Explained(raw, obj.describe()), mode="r")


def read_source(source: str | Path) -> pd.DataFrame:
    """Read a CSV/Parquet file, folder or bucket prefix (`pipeline.sources`) into one table."""
    frames = [_read_one(obj) for obj in list_source(source)]
    table = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if table.shape[1] == 0 or len(table) == 0:
        raise TableError(f"{source}: the table is empty (no rows or no columns)")
    return table


def _read_one(obj: SourceObject) -> pd.DataFrame:
    with open_object(obj) as file:
        try:
            if obj.format == "parquet":
                return pq.read_table(file).to_pandas()
            return pd.read_csv(file, engine="pyarrow")
        except TableError:
            raise
        except Exception as error:  # pyarrow raises many types; all mean "cannot read"
            raise TableError(
                f"{obj.describe()}: unreadable as {obj.format} ({error}); restore or re-export the file"
            ) from None


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


def _list_local(path: Path) -> list[SourceObject]:
    if path.is_dir():
        found = [
            (p.relative_to(path).parts, p)
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES and not _hidden(p.relative_to(path).parts)
        ]
        if not found:
            raise SourceError(f"{path}: folder holds no .csv or .parquet file; point data.source at your data")
        return [
            SourceObject(url=str(p), size=p.stat().st_size, partition=_partition(parts)) for parts, p in sorted(found)
        ]
    if not path.exists():
        raise SourceError(f"{path}: not found; check data.source in params.yaml")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise SourceError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")
    return [SourceObject(url=str(path), size=path.stat().st_size)]


def _list_remote(url: str) -> list[SourceObject]:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise SourceError(
            f"{url}: unsupported storage {scheme!r}; data.source takes a local path or s3://bucket/prefix"
        )
    fs = _filesystem(url)
    root = _fs_path(url).rstrip("/")
    bucket = root.split("/", 1)[0]
    try:
        entries = fs.find(root, detail=True)  # every object below root/, else the object root itself
    except Exception as error:  # s3fs and botocore raise many types; explain() sorts them
        raise SourceError(explain(url, error)) from None
    single = list(entries) == [root] and entries[root].get("type") != "directory"
    base = PurePosixPath(root).parent if single else PurePosixPath(root)
    objects = []
    for name, info in entries.items():
        name = name.split("?", 1)[0]
        parts = PurePosixPath(name).relative_to(base).parts
        if info.get("type") == "directory" or PurePosixPath(name).suffix.lower() not in TABLE_SUFFIXES:
            continue
        if _hidden(parts):
            continue
        version = info.get("VersionId")
        objects.append(
            (
                parts,
                SourceObject(
                    url=f"{scheme}://{name}",
                    size=int(info["size"]),
                    version_id=None if version in (None, "null") else str(version),
                    etag=_etag(info.get("ETag")),
                    partition=_partition(parts),
                ),
            )
        )
    if not objects:
        if not entries:
            raise SourceError(
                f"{url}: no such key or prefix in bucket {bucket!r} (nothing listed); point data.source at your data"
            )
        raise SourceError(f"{url}: holds no .csv or .parquet object; point data.source at your data")
    return [obj for _, obj in sorted(objects, key=lambda pair: pair[0])]


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith((".", "_")) for part in parts)


def _partition(parts: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Hive-style `key=value` folders of a relative path (not its file name)."""
    pairs = (part.split("=", 1) for part in parts[:-1] if "=" in part[1:])
    return tuple((key, value) for key, value in pairs)


def _fs_path(url: str) -> str:
    """`s3://bucket/key` as s3fs names it: `bucket/key`."""
    return url.split("://", 1)[1]


def _etag(value: object) -> str | None:
    return str(value).strip('"') if value else None


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
        "version_aware": True,
        "use_listings_cache": False,  # every listing asks the bucket (a poller lists the same prefix again)  # listings carry VersionId and reads name it (a plain bucket answers "null")
        "config_kwargs": {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
            "retries": {"mode": env.get("AWS_RETRY_MODE") or "standard", "max_attempts": _attempts(env)},
        },
    }


def _filesystem(url: str):
    import s3fs  # imported here: a local source never needs it

    fs = s3fs.S3FileSystem(**s3_options())
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


class _Explained:
    """An s3fs file whose read errors name the object (pyarrow passes them through as they are)."""

    def __init__(self, raw: Any, what: str) -> None:
        self._raw, self._what = raw, what

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def read(self, size: int = -1) -> bytes:
        try:
            return self._raw.read(size)
        except Exception as error:  # s3fs and botocore raise many types; explain() sorts them
            raise SourceError(explain(self._what, error)) from None

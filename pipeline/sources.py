"""Where the raw table comes from: a local file or folder, or objects in S3-compatible storage.

A source is listed into `SourceObject`s (url, size, version id / ETag, Hive partition values), in
one order whichever store holds it, and each object is opened as a pyarrow random-access file at
the version it was listed with. Nothing here needs Airflow: Spark executors and stage processes
call `list_source` and `open_object` as they are.

A listing can be pinned: `write_pin` saves it as a small JSON file (the source URL and every
object's url, size, version id, ETag and partition), and that file is itself a source
(`data.source: data/source.json`) that reads exactly those objects, at those versions, however the
bucket changed since. DVC then versions the pin like any small file, never the bucket.

Objects in a bucket are read through `pipeline.object_store` (s3fs; endpoint and credentials from
the environment, bounded retries, one-line errors that name the object and the cause).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.object_store import ENDPOINT_ENVS, ExplainedFile, SourceError, explain, filesystem, s3_options
from pipeline.tables import TableError

__all__ = [
    "ENDPOINT_ENVS",
    "Pin",
    "SourceError",
    "SourceObject",
    "explain",
    "is_pin",
    "is_remote",
    "list_source",
    "open_object",
    "pin",
    "read_pin",
    "read_source",
    "s3_options",
    "write_pin",
]

TABLE_SUFFIXES = (".parquet", ".csv")
SCHEMES = ("s3",)  # object stores this module reads (URL scheme of data.source)
BLOCK_BYTES = 8 << 20  # bytes fetched per ranged read of an object (a read-ahead buffer of this size)
PIN_SUFFIX = ".json"  # a local data.source ending so is a pin (write_pin), not a table


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


def is_pin(source: str | Path) -> bool:
    """A local pin file (`write_pin`) rather than a table, a folder or a URL."""
    return not is_remote(source) and str(source).lower().endswith(PIN_SUFFIX)


@dataclass(frozen=True)
class Pin:
    """A source's listing, kept: what `data.source` read when the pin was written."""

    source: str  # the URL (or path) that was listed
    objects: tuple[SourceObject, ...]

    @property
    def total_bytes(self) -> int:
        return sum(obj.size for obj in self.objects)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "objects": [obj.to_dict() for obj in self.objects]}


NO_PIN = Pin("", ())  # what the pin file holds while data.source is a local path


def pin(source: str | Path, env: Mapping[str, str] | None = None) -> Pin:
    """List `source` now (a pin file: list the source it was written from, again); `env` as for
    `list_source`."""
    url = read_pin(source).source if is_pin(source) else str(source)
    return Pin(url, tuple(list_source(url, env)))


def write_pin(path: str | Path, pinned: Pin) -> bool:
    """Write the pin atomically as stable JSON (the same listing gives the same bytes, so DVC sees
    no change); returns whether the file changed."""
    text = json.dumps(pinned.to_dict(), indent=1, sort_keys=True) + "\n"
    path = Path(path)
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)
    return True


def read_pin(path: str | Path) -> Pin:
    try:
        record = json.loads(Path(path).read_text())
        return Pin(str(record["source"]), tuple(SourceObject.from_dict(o) for o in record["objects"]))
    except FileNotFoundError:
        raise SourceError(f"{path}: not found; check data.source in params.yaml") from None
    except (ValueError, KeyError, TypeError) as error:
        raise SourceError(
            f"{path}: not a pin of a source (a JSON file with `source` and `objects`: {error!r}); write it again "
            "with `python -m devtools pin`"
        ) from None


def list_source(
    source: str | Path | Iterable[SourceObject], env: Mapping[str, str] | None = None
) -> list[SourceObject]:
    """The CSV/Parquet objects a source names, in order: the file itself, or every .csv/.parquet
    file below a folder or prefix (Hive `key=value/` folders included; names starting with `.`
    or `_`, such as `_SUCCESS` or `_temporary/`, skipped), sorted by their path below it. A pin
    file (`write_pin`) gives the objects it pinned; an iterable of objects is returned as it is.
    `env`: the AWS_* settings to use instead of the process environment (credentials included;
    a process that serves several sources, such as Airflow's triggerer, passes each its own)."""
    if not isinstance(source, str | Path):
        return list(source)
    if is_pin(source):
        pinned = read_pin(source).objects
        if not pinned:
            raise SourceError(f"{source}: the pin lists no object; pin the source again")
        return list(pinned)
    if is_remote(source):
        return _list_remote(str(source), env)
    return _list_local(Path(source))


def open_object(obj: SourceObject, env: Mapping[str, str] | None = None) -> pa.NativeFile:
    """A random-access file of the object's bytes at its pinned version; close it after use. An
    object whose bytes changed since it was listed (an unversioned bucket, a local file) is an
    error that says so, rather than a silently different input. `env` as for `list_source`."""
    if not obj.is_remote:
        try:
            file = pa.OSFile(obj.url, "rb")
        except OSError as error:
            raise SourceError(f"{obj.url}: cannot be read ({error}); check data.source") from None
        if file.size() != obj.size:
            file.close()
            raise SourceError(f"{obj.url}: {file.size()} bytes now, {obj.size} when listed; the file changed")
        return file
    fs = filesystem(env)
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
    return pa.PythonFile(ExplainedFile(raw, obj.describe()), mode="r")


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


def _list_remote(url: str, env: Mapping[str, str] | None) -> list[SourceObject]:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise SourceError(
            f"{url}: unsupported storage {scheme!r}; data.source takes a local path or s3://bucket/prefix"
        )
    fs = filesystem(env)
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

"""Where the engines write the tables of a stage: a part per unit of work, visible all at once.

`FolderOutputs` stages each output as a hidden folder beside its path (`.clean.parquet.<id>.tmp`)
into which any process (a Spark executor on another host, if the folder is on shared storage)
writes its parts; `commit` swaps every staged folder in at once, after the stage's verdict, and
`abort` removes them, so a failed run leaves the last good run's outputs as they were. A work
folder beside the first output holds what the passes hand each other (row hashes, bad rows).
`MemoryOutputs` keeps the parts in memory (in-memory tables, tests).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from pipeline.atomic import current_umask, fsync_path, fsync_tree
from pipeline.parts import part_name
from pipeline.sinks import MemorySink, ParquetSink, Sink


@dataclass(frozen=True)
class FolderOutputs:
    """Output name -> final folder, and the staged folders the parts are written into."""

    paths: dict[str, str]
    staged: dict[str, str]
    work: str

    @classmethod
    def create(cls, paths: dict[str, str]) -> FolderOutputs:
        staged = {}
        for name, path in paths.items():
            final = Path(path)
            final.parent.mkdir(parents=True, exist_ok=True)
            staged[name] = tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        first = Path(next(iter(paths.values())))
        work = tempfile.mkdtemp(prefix=f".{first.name}.work-", dir=first.parent)
        return cls(dict(paths), staged, work)

    def open_part(self, name: str, index: int, schema: pa.Schema) -> Sink:
        return ParquetSink(Path(self.staged[name]) / part_name(index), schema)

    def commit(self) -> None:
        """Swap each staged folder in place of its output (the old one goes only once the new is in)."""
        for name, path in self.paths.items():
            final, staged = Path(path), Path(self.staged[name])
            os.chmod(staged, 0o777 & ~current_umask())
            fsync_tree(staged)
            old = final.with_name(f".{final.name}.old")
            _remove(old)
            if final.exists() or final.is_symlink():
                os.replace(final, old)
            os.replace(staged, final)
            fsync_path(final.parent)
            _remove(old)
        self.abort()

    def abort(self) -> None:
        """Remove what is staged (nothing, after a commit) and the work folder."""
        for path in (*self.staged.values(), self.work):
            _remove(Path(path))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass
class MemoryOutputs:
    work: str
    parts: dict[str, dict[int, MemorySink]] = field(default_factory=dict)

    def open_part(self, name: str, index: int, schema: pa.Schema) -> Sink:
        sink = MemorySink(schema)
        self.parts.setdefault(name, {})[index] = sink
        return sink

    def table(self, name: str) -> pa.Table:
        sinks = self.parts[name]
        tables = [sinks[i].table for i in sorted(sinks)]
        return pa.concat_tables([t for t in tables if t is not None])

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass

"""Where a model repository's files live: a local folder or an S3 prefix, behind one small interface.

Keys are `/`-separated paths relative to the repository root (`digits/3/model.onnx`). A store
knows nothing about models or versions; `serving.repository.versions` builds those on top.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator, Mapping
from typing import Protocol

from pipeline.errors import StageError


class RepositoryError(StageError):
    """The candidate or the repository is not in the expected shape; nothing was written."""


class RepositoryFull(RepositoryError):
    """The repository's storage has no space left; what was being written is gone again."""


class Store(Protocol):
    """The operations the repository needs from its storage."""

    location: str  # what Triton's --model-repository names, for messages (never holds credentials)

    def folders(self, key: str) -> list[str]:
        """Names of the sub-folders directly under `key` ("" = the root) whose write finished."""
        ...

    def all_folders(self, key: str) -> list[str]:
        """Like `folders`, with folders whose write never finished (a cut-off upload) too."""
        ...

    def read(self, key: str) -> bytes | None:
        """A file's bytes, or None when it does not exist."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Replace one file whole: a reader sees the old bytes or the new ones."""
        ...

    def write_folder(self, key: str, files: Mapping[str, bytes]) -> None:
        """Create folder `key` holding `files` (relative key -> bytes). It becomes visible to
        `folders` only once every file is written; on failure nothing of it is left."""
        ...

    def read_folder(self, key: str) -> dict[str, bytes]:
        """Every file under folder `key` (relative key -> bytes)."""
        ...

    def remove_folder(self, key: str) -> None:
        """Delete folder `key` and everything under it (no error when it is absent)."""
        ...

    def make_root(self) -> None:
        """Create the repository's root, so that a server can start on it while it is empty."""
        ...

    def lock(self, key: str, timeout_s: float) -> contextlib.AbstractContextManager[None]:
        """Exclusive access for one model's push/rollback/prune, against every writer of the store."""
        ...


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def translate_disk_full(location: str, what: str) -> Iterator[None]:
    """An out-of-space OSError becomes RepositoryFull naming the repository (no traceback)."""
    try:
        yield
    except OSError as error:
        if not is_disk_full(error):
            raise
        raise RepositoryFull(
            f"no space left on {location}: {error.strerror or error} (while writing {what})"
        ) from error

"""The error of a push, rollback or prune."""

from pipeline.errors import StageError


class PushError(StageError):
    """A push, rollback or prune failed; the message says what failed and what serves now."""

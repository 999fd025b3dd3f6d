"""The one error type for failures a person can act on.

A stage (or the library code under it) raises `StageError` where the cause is outside the code:
bad data, bad params, a missing input, a failed check. Its message says what is wrong and what to
do. The stage CLIs print such an error as one paragraph with no traceback; any other exception is
a bug and keeps its traceback (`stages/_cli.py`).
"""

from __future__ import annotations


class StageError(RuntimeError):
    """An expected failure (bad data, bad params, failed check): the message says what to do."""

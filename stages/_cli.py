"""What every stage CLI shares: `--params`, logging, and turning expected failures into a clear
one-paragraph message and a non-zero exit instead of a traceback.

Expected failures are named, not guessed: `pipeline.errors.StageError` (and its subclasses, such
as `ParamsError` and `TableError`) print as `<stage> failed: <message>`. Anything else, a
`ValueError` from inside numpy or torch included, is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pipeline.errors import StageError
from pipeline.params import DEFAULT_PATH, Params, load_params

__all__ = ["EXPECTED", "StageError", "add_split_inputs", "main", "parser", "setup_logging"]

# Failures a person can act on: printed without a traceback (ParamsError and TableError are
# StageErrors too).
EXPECTED: tuple[type[BaseException], ...] = (StageError,)

# Set by whoever runs the stage (the Airflow task, through DVC) to a file that then receives the
# failure paragraph, so the task's error and its notification carry the cause, not only the exit code.
FAILURE_FILE_ENV = "RETRAIN_STAGE_FAILURE_FILE"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default=str(DEFAULT_PATH), help="params file (default: %(default)s)")
    return p


def add_split_inputs(p: argparse.ArgumentParser) -> None:
    """--clean and --split: the inputs of every stage that works on the split rows."""
    p.add_argument("--clean", required=True, help="clean table (Parquet)")
    p.add_argument("--split", required=True, help="split assignment table (Parquet)")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Great Expectations logs its own start-up chatter at INFO.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


T = TypeVar("T")


def main(stage: str, body: Callable[[argparse.Namespace, Params], T], args: argparse.Namespace) -> T:
    """Run a stage body and return its value; expected failures exit 1 with `<stage> failed: <message>`."""
    setup_logging()
    log = logging.getLogger(f"stages.{stage}")
    try:
        return body(args, load_params(args.params))
    except EXPECTED as error:
        log.error("%s failed: %s", stage, error)
        print(f"\n{stage} failed: {error}", file=sys.stderr)
        if failure_file := os.environ.get(FAILURE_FILE_ENV):
            with contextlib.suppress(OSError):  # the message above is what counts; this is a copy
                Path(failure_file).write_text(f"{stage} failed: {error}")
        sys.exit(1)

"""The stage CLI wrapper: an expected failure prints one line, a bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A stage body run through `_cli.main` exactly as the real stages do.
SCRIPT = """
import sys
from stages import _cli
from pipeline.errors import StageError

def body(args, params):
    if sys.argv[1] == "data":
        raise StageError("column px_5 is missing; fix the data")
    import numpy as np
    np.zeros(3).reshape(2, 2)  # an internal bug: numpy raises ValueError

_cli.main("demo", body, _cli.parser("demo").parse_args(["--params", sys.argv[2]]))
"""


def _run(kind: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, kind, str(ROOT / "params.yaml")], cwd=ROOT, capture_output=True, text=True
    )


def test_expected_failure_prints_one_paragraph_without_traceback() -> None:
    result = _run("data")
    assert result.returncode == 1
    assert "demo failed: column px_5 is missing; fix the data" in result.stderr
    assert "Traceback" not in result.stderr


def test_internal_bug_keeps_its_traceback() -> None:
    result = _run("bug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError" in result.stderr
    assert "demo failed" not in result.stderr

"""A stage run by an interpreter without the project's libraries (`.venv/bin/dvc repro` with the
venv not on PATH: DVC's `python` is then the system one) says which interpreter it got and how to
activate the venv, instead of a `ModuleNotFoundError` deep in an import."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stage_under_a_bare_interpreter_says_to_activate_the_venv(tmp_path: Path) -> None:
    # A fresh venv of the same base Python, without the project's packages: the interpreter DVC
    # finds first on PATH when the project's venv is not activated.
    venv.create(tmp_path / "bare", with_pip=False)
    bare = tmp_path / "bare" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run(
        [str(bare), "-m", "stages.embed", "--out", str(tmp_path / "out.parquet")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "ModuleNotFoundError" not in result.stderr, result.stderr
    assert str(bare) in result.stderr or os.path.realpath(bare) in result.stderr, result.stderr
    assert "cannot import" in result.stderr and "pandas" in result.stderr
    assert "source .venv/bin/activate" in result.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_the_project_interpreter_passes_the_check() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import stages"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr

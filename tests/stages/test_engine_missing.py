"""engine.name: spark where PySpark or Java is missing: the stage stops with the message the docs
(docs/engines.md) promise, before reading anything, and no traceback. PySpark is installed here,
so the test hides it from the stage's interpreter (an import of it then fails, as when it is not
installed); Java is hidden by a PATH without it and no JAVA_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.engines.spark_session import MISSING_JAVA, MISSING_PYSPARK

HIDE_PYSPARK = (
    "import runpy, sys; sys.modules['pyspark'] = None; "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)


def _spark_params(project_root: Path, tmp_path: Path) -> Path:
    params = tmp_path / "params.yaml"
    params.write_text((project_root / "params.yaml").read_text().replace("name: local ", "name: spark "))
    return params


def _run(stage: str, args: list[str], project_root: Path, env: dict | None = None, hide_pyspark: bool = False):
    prefix = (
        [sys.executable, "-c", HIDE_PYSPARK, f"stages.{stage}"]
        if hide_pyspark
        else [sys.executable, "-m", f"stages.{stage}"]
    )
    return subprocess.run(prefix + args, cwd=project_root, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("stage", ["clean", "split"])
def test_no_pyspark_is_the_documented_message(stage, project_root, tmp_path):
    params = _spark_params(project_root, tmp_path)
    outputs = {"clean": ["out", "quarantine", "metrics", "report"], "split": ["out", "metrics"]}[stage]
    args = ["--params", str(params), "--raw" if stage == "clean" else "--clean", str(tmp_path / "in.parquet")]
    args += [arg for name in outputs for arg in (f"--{name}", str(tmp_path / name))]
    failed = _run(stage, args, project_root, hide_pyspark=True)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert f"{stage} failed:" in failed.stderr and MISSING_PYSPARK in failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written, nothing staged
    assert MISSING_PYSPARK in (project_root / "docs" / "engines.md").read_text().replace("\n", " ")


def test_no_java_is_the_documented_message(project_root, tmp_path):
    params = _spark_params(project_root, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(Path(sys.executable).parent)  # the interpreter's own folder: no java in it
    args = ["--params", str(params), "--raw", str(tmp_path / "in.parquet")]
    args += [arg for name in ("out", "quarantine", "metrics", "report") for arg in (f"--{name}", str(tmp_path / name))]
    failed = _run("clean", args, project_root, env=env)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert MISSING_JAVA in failed.stderr
    assert MISSING_JAVA in (project_root / "docs" / "engines.md").read_text().replace("\n", " ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written, nothing staged

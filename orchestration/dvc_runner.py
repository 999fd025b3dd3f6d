"""Run one DVC stage in the workspace, the way each Airflow stage task does.

`dvc --wait-for-lock repro --single-item <stage>` lets DVC decide what really runs: a stage whose
deps and params are unchanged is skipped in about a second, one found in the run cache is restored
without running, anything else runs its command.

Parallel tasks and DVC's repository lock: DVC holds `.dvc/tmp/lock` while it reads the pipeline,
hashes deps and writes `dvc.lock`, but releases it while the stage's command runs (per-path
read/write locks in `.dvc/tmp/rwlock` then keep two stages from writing the same output).
`--wait-for-lock` makes a second DVC process wait for those short bookkeeping sections instead of
failing after three seconds. So the CV folds train in parallel in one workspace, and only their
few-second bookkeeping is serialised; `tests/dags/test_dvc_runner.py` runs folds side by side.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from orchestration.workspace import dvc_command, tool_env

log = logging.getLogger(__name__)

# What DVC logs for each outcome (dvc/stage/__init__.py, run.py, cache.py).
_OUTCOMES = (
    ("ran", re.compile(r"Running stage '([^']+)'")),
    ("restored", re.compile(r"Stage '([^']+)' is cached - skipping run")),
    ("unchanged", re.compile(r"Stage '([^']+)' didn't change, skipping")),
)


class StageFailed(RuntimeError):
    """The stage's command (or DVC) exited non-zero; the message ends with its last output lines."""


def outcome(output: str, stage: str) -> str:
    """ran | restored | unchanged, from DVC's own log lines about `stage`."""
    for name, pattern in _OUTCOMES:
        if stage in pattern.findall(output):
            return name
    return "unknown"


def run_stage(workspace: str | Path, stage: str) -> dict[str, Any]:
    """Reproduce one stage; stream DVC's and the stage's output to the log; raise on failure."""
    workspace = Path(workspace)
    cmd = dvc_command("--wait-for-lock", "repro", "--single-item", stage)
    log.info("$ %s  (in %s)", " ".join(cmd[2:]), workspace)
    started = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        cmd,
        cwd=workspace,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            lines.append(line)
            log.info("%s", line)
        code = process.wait()
    seconds = round(time.monotonic() - started, 2)
    output = "\n".join(lines)
    if code:
        tail = "\n".join(lines[-15:])
        raise StageFailed(f"stage {stage} failed (dvc exit {code}) after {seconds}s:\n{tail}")
    result = outcome(output, stage)
    if result == "unchanged":
        log.info("stage %s was up to date: nothing ran (%.1fs)", stage, seconds)
    elif result == "restored":
        log.info("stage %s restored from DVC's run cache: nothing ran (%.1fs)", stage, seconds)
    else:
        log.info("stage %s %s in %.1fs", stage, result, seconds)
    return {"stage": stage, "outcome": result, "seconds": seconds}

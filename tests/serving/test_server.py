"""`python -m serving start|push|status|stop`: a real server, its PID file and log, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.server import _alive

ROOT = Path(__file__).resolve().parents[2]


def serving_cli(*args: str, env: dict[str, str]) -> tuple[int, dict]:
    """Run the CLI with --json; returns the exit code and the JSON of its last stdout line."""
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--params", str(ROOT / "params.yaml"), "--json", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
    return done.returncode, json.loads(last)


@pytest.mark.triton
def test_start_push_restart_stop_by_pid(tmp_path, make_candidate, unused_ports):
    http, grpc, metrics = unused_ports
    state = tmp_path / "state"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TRITON_STATE_DIR": str(state),
        "TRITON_MODEL_REPOSITORY": str(tmp_path / "models"),
        "TRITON_HTTP_PORT": str(http),
        "TRITON_GRPC_PORT": str(grpc),
        "TRITON_METRICS_PORT": str(metrics),
        "TRITON_URL": "",  # the local server, not whatever the caller's shell points at
    }
    code, started = serving_cli("start", env=env)
    try:
        assert code == 0 and started["ready"]
        pid = int((state / "tritonserver.pid").read_text())
        assert pid == started["pid"] and _alive(pid)
        assert (state / "tritonserver.log").stat().st_size > 0

        code, pushed = serving_cli("push", "--candidate", str(make_candidate(name="cli", seed=1)), env=env)
        assert code == 0 and (pushed["status"], pushed["version"]) == ("pushed", 1)

        code, stopped = serving_cli("stop", env=env)
        assert code == 0 and stopped["stopped"] == pid
        assert not (state / "tritonserver.pid").exists() and not _alive(pid)

        # A restarted server (explicit mode: nothing loaded) comes back serving the pinned version.
        code, restarted = serving_cli("start", env=env)
        assert code == 0 and restarted["loaded"] == {"cli": 1}
        code, status = serving_cli("status", env=env)
        (model,) = status["models"]
        assert code == 0 and (model["model"], model["serving"], model["live_ready"]) == ("cli", 1, True)
    finally:
        serving_cli("stop", env=env)
    assert not (state / "tritonserver.pid").exists()


def test_push_to_a_server_that_is_down_exits_nonzero_with_json(tmp_path, make_candidate, unused_ports):
    env = {
        **os.environ,
        "TRITON_URL": f"http://127.0.0.1:{unused_ports[0]}",
        "TRITON_RETRIES": "1",
        "TRITON_BACKOFF_S": "0.01",
        "TRITON_MODEL_REPOSITORY": str(tmp_path / "models"),
    }
    code, outcome = serving_cli("push", "--candidate", str(make_candidate(name="cli", seed=1)), env=env)
    assert code == 1 and outcome["ok"] is False
    assert "no Triton server answered" in outcome["error"] and "after 2 tries" in outcome["error"]

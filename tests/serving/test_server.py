"""The local server: start, push, status, stop through the CLI; its identity; its restricted model control."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from support import free_ports

from serving import control, server
from serving.client import ClientError, ClientSettings, TritonClient
from serving.params import ServingParams
from serving.push import push_candidate, rollback
from serving.server import (
    ServerError,
    ServerSettings,
    _alive,
    read_pid,
    server_command,
    server_state,
    stop_server,
)
from serving.settings import ServingSettings
from serving.startup import start_local_server
from serving.status import serving_status

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
        # live counters of the restarted server: the golden rows of `sample` are its only request
        code, sampled = serving_cli("sample", "--model", "cli", env=env)
        assert code == 0 and sampled["predicted"] == sampled["expected"]
        code, status = serving_cli("status", env=env)
        (counters,) = status["counters"]
        assert (counters["model"], counters["version"], counters["requests"], counters["failures"]) == ("cli", 1, 1, 0)
        assert status["counters_error"] is None and counters["avg_compute_ms"] > 0
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


def test_the_command_line_carries_the_id_and_the_restricted_apis(tmp_path):
    settings = ServerSettings.from_params(ServingParams(), env={"TRITON_CONTROL_KEY": "k3y"})
    assert settings.control_key == "k3y" and "k3y" not in repr(settings)
    command = server_command(settings, tmp_path, "triton-retrain-abc", "k3y")
    assert "--id=triton-retrain-abc" in command
    assert "--http-restricted-api=model-repository,model-config:triton-control-key=k3y" in command
    assert "--grpc-restricted-protocol=model-repository,model-config:triton-control-key=k3y" in command


# --- identity: a port held by another server is not our server ------------------------------
def local_env(state: Path, repository: Path, ports: list[int]) -> dict[str, str]:
    http, grpc, metrics = ports
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TRITON_STATE_DIR": str(state),
        "TRITON_MODEL_REPOSITORY": str(repository),
        "TRITON_HTTP_PORT": str(http),
        "TRITON_GRPC_PORT": str(grpc),
        "TRITON_METRICS_PORT": str(metrics),
        "TRITON_URL": "",
    }


@pytest.mark.triton
def test_start_on_ports_held_by_another_server_fails_and_names_it(tmp_path, triton_server):
    """Two checkouts, one after the other, on the same ports: the second start must not report
    the first one's server as its own."""
    theirs = triton_server
    ports = [theirs.http_port, theirs.grpc_port, theirs.metrics_port]
    env = local_env(tmp_path / "state", tmp_path / "models", ports)

    code, outcome = serving_cli("start", env=env)

    assert code == 1 and outcome["ok"] is False
    assert f"held by another Triton server with id {theirs.server_id!r}" in outcome["error"]
    assert "TRITON_HTTP_PORT" in outcome["error"]
    assert not (tmp_path / "state" / "tritonserver.pid").exists()
    assert not (tmp_path / "state" / control.KEY_FILE).exists()
    code, status = serving_cli("status", env=env)
    assert "answers as another Triton server" in status["local_process"]
    # theirs keeps running, untouched
    assert server_state(theirs).ready and read_pid(theirs) is not None


@pytest.mark.triton
def test_a_ready_answer_from_another_server_is_not_taken_for_ours(tmp_path, triton_server, monkeypatch):
    """The port may be taken between the check and the bind: the id in /v2 tells the servers apart."""
    monkeypatch.setattr(server, "_busy_ports", lambda settings: {})
    ours = ServerSettings(
        repository=tmp_path / "models",
        state_dir=tmp_path / "state",
        http_port=triton_server.http_port,
        grpc_port=triton_server.grpc_port,
        metrics_port=triton_server.metrics_port,
        start_timeout_s=60.0,
    )
    with pytest.raises(ServerError, match="exited with code .* held by another Triton server"):
        start_local_server(ours)
    assert not ours.pid_file.exists() and read_pid(ours) is None
    assert server_state(triton_server).ready


@pytest.mark.triton
def test_a_pid_file_naming_another_tritonserver_is_not_ours(tmp_path, triton_server):
    ours = ServerSettings(tmp_path / "models", tmp_path / "state", *free_ports(3))
    ours.state_dir.mkdir()
    ours.pid_file.write_text(f"{read_pid(triton_server)}\n")  # alive, a tritonserver, but not ours
    ours.id_file.write_text("triton-retrain-000000000000\n")
    assert read_pid(ours) is None
    assert stop_server(ours) is None and read_pid(triton_server) is not None


# --- restricted model control ---------------------------------------------------------------------
@pytest.mark.triton
def test_model_control_needs_the_key_while_inference_stays_open(triton_server, serving_settings, make_candidate):
    """Another local process can use the model, but not unload it or load code of its own."""
    pushed = push_candidate(make_candidate(name="guarded", seed=3), serving_settings)  # the push has the key
    assert pushed.status == "pushed"
    key_file = triton_server.state_dir / control.KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert key not in triton_server.log_file.read_text() and key not in repr(triton_server)

    rows = np.zeros((2, 64), np.float32)
    for protocol, port in (("http", triton_server.http_port), ("grpc", triton_server.grpc_port)):
        stranger = ClientSettings(url=f"127.0.0.1:{port}", protocol=protocol, retries=2, backoff_s=0.5)
        with TritonClient(stranger) as client:
            assert client.predict("guarded", rows).shape == (2, 10)  # inference is open
            started = time.monotonic()
            for call in (
                lambda: client.unload("guarded"),
                lambda: client.load("guarded", timeout_s=30),
                client.repository_index,
            ):
                with pytest.raises(ClientError, match="is restricted.*TRITON_CONTROL_KEY"):
                    call()
            assert time.monotonic() - started < 1.0  # a refusal is an answer: no retries
    request = urllib.request.Request(
        f"http://127.0.0.1:{triton_server.http_port}/v2/repository/models/guarded/unload", data=b"", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)  # noqa: S310 - 127.0.0.1
    assert refused.value.code == 403

    with TritonClient(serving_settings.client) as client:
        assert client.model_ready("guarded", 1)  # still serving


@pytest.mark.triton
def test_every_client_the_project_makes_finds_the_local_servers_key(triton_server, make_candidate):
    """push, status, rollback and the gate build their clients from params + environment: pointed
    at the local server's ports and state folder, they find its key by themselves."""
    from stages.gate import champion_version

    params = ServingParams(
        http_port=triton_server.http_port,
        grpc_port=triton_server.grpc_port,
        metrics_port=triton_server.metrics_port,
        state_dir=str(triton_server.state_dir),
        repository=str(triton_server.repository),
    )
    for protocol in ("http", "grpc"):
        env = {"TRITON_PROTOCOL": protocol}
        settings = ServingSettings.from_params(params, env)
        name = f"keyed_{protocol}"
        push_candidate(make_candidate(name=name, seed=11), settings)
        push_candidate(make_candidate(name=name, seed=12), settings)
        assert serving_status(settings, name).models[0].live_ready is True
        assert rollback(name, settings).version == 1
        with TritonClient(ClientSettings.from_params(params, env)) as client:  # as stages/gate.py builds it
            assert champion_version(settings.open_repository(), client, name) == 1

"""The Airflow Connection of the serving Triton turns into the TRITON_* settings the serving code
reads: the scheme and TLS survive, a token never goes out in clear text unless allowed, and without
a Connection the local server's key is found from any working folder.

Airflow resolves `AIRFLOW_CONN_*` variables in a fresh interpreter, as a task would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONNECTIONS = {
    # conn id -> AIRFLOW_CONN_* value (a URI or Airflow's JSON form)
    "https_host": {"conn_type": "http", "host": "https://triton.example.com", "port": 443, "password": "t0ken-a"},
    "hook_schema": {"conn_type": "http", "host": "triton.example.com", "schema": "https", "password": "t0ken-b"},
    "grpcs_uri": "grpcs://:t0ken-c@triton.example.com:8001?model_repository=%2Fmnt%2Fmodels&candidate_entry=gpu",
    "ssl_extra": {"conn_type": "http", "host": "triton.example.com", "port": 8000, "extra": {"ssl_ca_file": "ca.pem"}},
    "clear_token": {"conn_type": "http", "host": "triton.example.com", "port": 8000, "password": "t0ken-d"},
    "allowed_clear": {
        "conn_type": "http",
        "host": "triton.internal",
        "port": 8000,
        "password": "t0ken-e",
        "extra": {"allow_insecure_token": True, "control_key": "k3y-e"},
    },
    "plain_local": {"conn_type": "http", "host": "127.0.0.1", "port": 8100, "extra": {"control_key": "k3y-l"}},
    "clear_key": {"conn_type": "http", "host": "triton.example.com", "port": 8000, "extra": {"control_key": "k3y-f"}},
}

PROBE = """
import json, sys
from orchestration.tasks import triton_env
from pipeline.params import ServingParams
from serving.client import ClientSettings

out = {}
for conn_id in sys.argv[1:]:
    try:
        env = triton_env(conn_id, project=PROJECT if conn_id == "missing" else None)
        client = ClientSettings.from_params(ServingParams(), env)
        out[conn_id] = {"env": env, "describe": client.describe(), "protocol": client.protocol,
                        "ssl": client.ssl, "headers": sorted(client.headers)}
    except Exception as error:
        out[conn_id] = {"error": f"{type(error).__name__}: {error}"}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TRITON_"))}
    env["AIRFLOW_HOME"] = str(home)
    for conn_id, value in CONNECTIONS.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    code = PROBE.replace("PROJECT", repr(str(ROOT)))
    done = subprocess.run(
        [sys.executable, "-c", code, *CONNECTIONS, "missing"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_https_host_keeps_its_scheme_and_port(resolved):
    case = resolved["https_host"]
    assert case["env"]["TRITON_URL"] == "https://triton.example.com:443"
    assert (case["describe"], case["ssl"], case["headers"]) == (
        "https://triton.example.com:443",
        True,
        ["Authorization"],
    )


def test_the_http_hooks_schema_field_turns_tls_on(resolved):
    case = resolved["hook_schema"]
    assert case["env"]["TRITON_URL"] == "https://triton.example.com" and case["ssl"] is True


def test_a_grpcs_uri_is_grpc_over_tls(resolved):
    case = resolved["grpcs_uri"]
    assert (case["protocol"], case["ssl"], case["describe"]) == ("grpc", True, "grpcs://triton.example.com:8001")
    assert case["env"]["TRITON_MODEL_REPOSITORY"] == "/mnt/models"


def test_any_ssl_extra_turns_tls_on(resolved):
    case = resolved["ssl_extra"]
    assert case["env"]["TRITON_URL"] == "https://triton.example.com:8000"
    assert case["env"]["TRITON_SSL_CA_FILE"] == "ca.pem" and case["ssl"] is True


def test_a_token_without_tls_is_refused_naming_the_connection(resolved):
    error = resolved["clear_token"]["error"]
    assert error.startswith("AirflowFailException") and "'clear_token'" in error and "allow_insecure_token" in error
    assert "t0ken-d" not in error


def test_clear_text_only_when_the_connection_allows_it(resolved):
    case = resolved["allowed_clear"]
    assert (case["describe"], case["ssl"], case["headers"]) == ("http://triton.internal:8000", False, ["Authorization"])
    assert case["env"]["TRITON_CONTROL_KEY"] == "k3y-e"


def test_a_plain_connection_to_this_machine_stays_plain_and_carries_the_key(resolved):
    case = resolved["plain_local"]
    assert (case["env"]["TRITON_URL"], case["ssl"]) == ("http://127.0.0.1:8100", False)
    assert case["env"]["TRITON_CONTROL_KEY"] == "k3y-l"


def test_a_control_key_to_another_host_needs_tls(resolved):
    error = resolved["clear_key"]["error"]
    assert error.startswith("AirflowFailException") and "'clear_key'" in error and "k3y-f" not in error


def test_without_a_connection_the_local_state_folder_is_absolute(resolved):
    """The gate runs in the workspace: a relative `.triton` there is not the local server's."""
    case = resolved["missing"]
    assert case["env"] == {"TRITON_STATE_DIR": str(ROOT / ".triton")}


def test_a_gpu_server_gets_the_candidates_gpu_entry_from_the_connection(resolved):
    """The extra `candidate_entry` picks the candidate's folder the push writes (gpu/: KIND_GPU
    configs for an onnxruntime/libtorch server on GPUs), as TRITON_CANDIDATE_ENTRY does."""
    from pipeline.params import ServingParams
    from serving.push import ServingSettings

    env = resolved["grpcs_uri"]["env"]
    assert env["TRITON_CANDIDATE_ENTRY"] == "gpu"
    assert ServingSettings.from_params(ServingParams(), env).candidate_entry == "gpu"

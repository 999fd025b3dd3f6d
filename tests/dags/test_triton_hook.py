"""The Airflow Connection of the serving Triton becomes the serving code's settings through
`TritonHook`, in one step and without going through environment strings: the scheme and TLS
survive, a token never goes out in clear text unless allowed, the worker's TRITON_* apply where the
Connection says nothing, and without a Connection the local server's key and repository are found
from any working folder.

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
import json, os, sys
from pathlib import Path
from orchestration.triton_hook import TritonHook
from serving.params import ServingParams

out = {}
for conn_id in sys.argv[1:]:
    before = dict(os.environ)
    try:
        hook = TritonHook(conn_id, project=Path(PROJECT), serving=ServingParams())
        settings = hook.get_conn()
        client = settings.client
        out[conn_id] = {"describe": client.describe(), "protocol": client.protocol, "ssl": client.ssl,
                        "headers": sorted(client.headers), "ssl_ca_file": client.ssl_ca_file,
                        "control_key": client.control_key, "repository": str(settings.repository),
                        "candidate_entry": settings.candidate_entry, "retries": client.retries,
                        "conn_attrs": [hook.conn_name_attr, hook.default_conn_name, hook.conn_type]}
    except Exception as error:
        out[conn_id] = {"error": f"{type(error).__name__}: {error}"}
    out[conn_id]["environment_unchanged"] = dict(os.environ) == before
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TRITON_"))}
    env["AIRFLOW_HOME"] = str(home)
    env["TRITON_RETRIES"] = "7"  # the worker's own setting: applies where the Connection says nothing
    for conn_id, value in CONNECTIONS.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    code = PROBE.replace("PROJECT", repr(str(ROOT)))
    done = subprocess.run(
        [sys.executable, "-c", code, *CONNECTIONS, "missing"],
        cwd=home,  # not the project: relative paths must not depend on where the task runs
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_https_host_keeps_its_scheme_and_port(resolved):
    case = resolved["https_host"]
    assert (case["describe"], case["ssl"], case["headers"]) == (
        "https://triton.example.com:443",
        True,
        ["Authorization"],
    )


def test_the_http_hooks_schema_field_turns_tls_on(resolved):
    case = resolved["hook_schema"]
    assert (case["describe"], case["ssl"]) == ("https://triton.example.com", True)


def test_a_grpcs_uri_is_grpc_over_tls(resolved):
    case = resolved["grpcs_uri"]
    assert (case["protocol"], case["ssl"], case["describe"]) == ("grpc", True, "grpcs://triton.example.com:8001")
    assert case["repository"] == "/mnt/models"


def test_any_ssl_extra_turns_tls_on(resolved):
    case = resolved["ssl_extra"]
    assert (case["describe"], case["ssl_ca_file"], case["ssl"]) == ("https://triton.example.com:8000", "ca.pem", True)


def test_a_token_without_tls_is_refused_naming_the_connection(resolved):
    error = resolved["clear_token"]["error"]
    assert error.startswith("TritonConnectionError") and "'clear_token'" in error and "allow_insecure_token" in error
    assert "t0ken-d" not in error


def test_clear_text_only_when_the_connection_allows_it(resolved):
    case = resolved["allowed_clear"]
    assert (case["describe"], case["ssl"], case["headers"]) == ("http://triton.internal:8000", False, ["Authorization"])
    assert case["control_key"] == "k3y-e"


def test_a_plain_connection_to_this_machine_stays_plain_and_carries_the_key(resolved):
    case = resolved["plain_local"]
    assert (case["describe"], case["ssl"], case["control_key"]) == ("http://127.0.0.1:8100", False, "k3y-l")


def test_a_control_key_to_another_host_needs_tls(resolved):
    error = resolved["clear_key"]["error"]
    assert error.startswith("TritonConnectionError") and "'clear_key'" in error and "k3y-f" not in error


def test_without_a_connection_the_local_server_is_found_from_any_folder(resolved):
    """The gate runs in the workspace: a relative `.triton/models` there is not the local server's."""
    case = resolved["missing"]
    assert (case["describe"], case["repository"]) == ("http://127.0.0.1:8000", str(ROOT / ".triton" / "models"))


def test_the_workers_own_settings_apply_where_the_connection_says_nothing(resolved):
    assert {case["retries"] for case in resolved.values() if "error" not in case} == {7}


def test_the_hook_is_airflows_form_and_touches_no_environment(resolved):
    """A BaseHook with its Connection attributes; resolving never writes TRITON_* strings anywhere."""
    assert resolved["https_host"]["conn_attrs"] == ["triton_conn_id", "triton_default", "http"]
    assert all(case["environment_unchanged"] for case in resolved.values())


def test_a_gpu_server_gets_the_candidates_gpu_entry_from_the_connection(resolved):
    """The extra `candidate_entry` picks the candidate's folder the push writes (gpu/: KIND_GPU
    configs for an onnxruntime/libtorch server on GPUs), as TRITON_CANDIDATE_ENTRY does."""
    assert resolved["grpcs_uri"]["candidate_entry"] == "gpu"

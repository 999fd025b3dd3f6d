"""`make airflow` (`python -m devtools ui`) runs Airflow with no login (everyone is admin), so
its UI and REST API must listen on the loopback interface only, never on every interface
(Airflow's default `[api] host` is 0.0.0.0)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from support import started

from devtools.airflow_home import airflow_env

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def _env(project: Path, **extra: str) -> dict[str, str]:
    """devtools.airflow_home's environment, as `make airflow` builds it from a clean shell."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("AIRFLOW_", "AIRFLOW__")):
                mp.delenv(key)
        for key, value in extra.items():
            mp.setenv(key, value)
        env = airflow_env(project)
    return env


def test_generated_configuration_binds_the_api_to_loopback(tmp_path: Path, helpers) -> None:
    (port,) = helpers.free_ports(1)
    env = _env(tmp_path, AIRFLOW__API__PORT=str(port))
    out = subprocess.run(
        [AIRFLOW, "config", "get-value", "api", "host"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "127.0.0.1"
    # The tasks reach the Execution API where it listens, on the port the person chose.
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://127.0.0.1:{port}/execution/"


@pytest.mark.airflow
def test_api_server_listens_on_loopback_only(tmp_path: Path, helpers, migrated_db: Path) -> None:
    """The api-server started with the generated configuration: its listening socket is 127.0.0.1."""
    (port,) = helpers.free_ports(1)
    env = _env(tmp_path, AIRFLOW__API__PORT=str(port))
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True)
    (home / "airflow.db").write_bytes(migrated_db.read_bytes())
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    (tmp_path / "dags").mkdir()
    log = tmp_path / "api-server.log"
    with started([AIRFLOW, "api-server"], env, log) as server:
        listening: set[str] = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(urllib.error.URLError, OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2)  # noqa: S310
                listening = {
                    c.laddr.ip
                    for c in psutil.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN and c.laddr.port == port
                }
                break
            time.sleep(0.5)
        assert listening == {"127.0.0.1"}, f"listening on {listening}:\n{log.read_text()[-2000:]}"

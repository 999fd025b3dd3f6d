"""The Airflow configuration that `make run`, `make airflow` and the local cluster share.

One person on this machine: everyone who reaches the UI is an admin (no login), so the UI and REST
API listen on the loopback interface only. Running Airflow for a team is a different
configuration (a real auth manager and users). The cluster adds its executor, database and broker
on top (devtools/cluster/services.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from orchestration.params import AirflowParams

log = logging.getLogger(__name__)

AIRFLOW_DIR = ".airflow"  # the ignored folder of the project where local Airflow keeps its home
LOOPBACK = "127.0.0.1"
PROJECT_ENV = "RETRAIN_PROJECT_DIR"  # where dags/retrain.py and the plugin find the project


def airflow_env(
    project: Path, home: Path | None = None, api_port: int | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`base` (default: this process's environment) with the project's Airflow settings: its home
    (default `.airflow/` in the project), DAG and plugin folders, no login, the api-server on the
    loopback interface at `api_port` (default: AIRFLOW__API__PORT, else 8080), and tasks reporting
    to the Execution API where it really listens."""
    env = dict(os.environ if base is None else base)
    port = str(api_port) if api_port is not None else env.get("AIRFLOW__API__PORT", "8080")
    execution_api = f"http://{LOOPBACK}:{port}/execution/"
    if api_port is None:  # a person's own setting stands; the cluster sets its own
        execution_api = env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", execution_api)
    env.update(
        {
            "AIRFLOW_HOME": str(home or project / AIRFLOW_DIR),
            "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
            # the reports page and the tasks' "Reports" links (plugins/retrain_reports.py)
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(project / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # No login: anyone who reaches the UI may approve a deployment or edit a Connection.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # Airflow's default is 0.0.0.0 (every interface); with no login that is the network.
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": execution_api,
            PROJECT_ENV: str(project),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        }
    )
    if api_port is not None:
        env["AIRFLOW__API__PORT"] = port
    return env


def airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def airflow(env: Mapping[str, str], *args: str) -> str:
    """Run one `airflow` command; its output, or SystemExit with the end of it."""
    result = subprocess.run([airflow_bin(), *args], env=dict(env), capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def prepare_airflow(env: Mapping[str, str], af: AirflowParams) -> None:
    """Migrate the metadata database (idempotent) and make sure the GPU pool exists."""
    started = time.perf_counter()
    airflow(env, "db", "migrate")
    airflow(env, "pools", "set", af.gpu_pool, str(af.gpu_pool_slots), "GPU stages of the retrain DAG (airflow.gpu_*)")
    log.info("Airflow database ready in %s (%.1fs)", env["AIRFLOW_HOME"], time.perf_counter() - started)

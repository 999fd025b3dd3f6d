"""The Airflow side of the Spark engine: the master of the Connection `airflow.spark_conn_id`
becomes SPARK_MASTER for the stage commands, read the way Airflow's Spark provider reads it.
Real Airflow Connections (AIRFLOW_CONN_* in a subprocess, as a worker sees them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, edit_params

from orchestration.spark_connection import spark_master_url


@pytest.mark.parametrize(
    ("host", "port", "master"),
    [
        ("spark://spark-master", 7077, "spark://spark-master:7077"),
        ("spark-master", 7077, "spark://spark-master:7077"),
        ("spark://spark-master:7078", 7077, "spark://spark-master:7078"),
        ("yarn", None, "yarn"),
        ("local[2]", None, "local[2]"),
        ("k8s://https://10.0.0.1:6443", None, "k8s://https://10.0.0.1:6443"),
    ],
)
def test_the_master_url_of_a_spark_connection(host: str, port: int | None, master: str) -> None:
    assert spark_master_url(host, port) == master


PROBE = """
import json, sys
from orchestration.spark_connection import spark_env
from orchestration.tasks import project_params
params = project_params(sys.argv[1])
named = lambda conn: params.model_copy(update={"airflow": params.airflow.model_copy(update={"spark_conn_id": conn})})
print(json.dumps({conn: spark_env(named(conn)) for conn in sys.argv[2:]}))
"""


def probe(project: Path, tmp_path: Path, *conn_ids: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SPARK_"))}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    env["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps({"conn_type": "spark", "host": "spark://master", "port": 7077})
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(project), *conn_ids],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_stages_on_spark_take_the_connections_master(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    edit_params(project, engine__name="spark")
    found = probe(project, tmp_path, "spark_default", "missing_spark")
    assert found["spark_default"] == {"SPARK_MASTER": "spark://master:7077"}
    assert found["missing_spark"] == {}  # no Connection: engine.spark_master (or SPARK_MASTER) decides


def test_the_local_engine_looks_up_no_spark_connection(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    assert probe(project, tmp_path, "spark_default") == {"spark_default": {}}

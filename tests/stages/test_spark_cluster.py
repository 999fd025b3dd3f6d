"""The cluster path: a standalone Spark master and one worker, started here from PySpark's own
launcher classes on 127.0.0.1, run clean and split; the files are the local engine's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest
from spark_support import assert_same_outputs, needs_java, planted_folder, run_stages
from support import free_ports

from pipeline.engines import spark as spark_engine
from pipeline.params import EngineParams

pytestmark = [pytest.mark.spark, pytest.mark.integration, needs_java]

SPARK_HOME = Path(pyspark.__file__).parent


def _start(log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "PYSPARK_PYTHON": sys.executable}
    with log.open("w") as out:
        return subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as answer:
            return int(json.load(answer).get("aliveworkers", 0))
    except OSError:
        return 0


@pytest.fixture(scope="module")
def standalone(tmp_path_factory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("spark-logs")
    port, ui, worker_ui = free_ports(3)
    url = f"spark://127.0.0.1:{port}"
    master = _start(
        logs / "master.log",
        "org.apache.spark.deploy.master.Master",
        *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)),
    )
    worker = _start(
        logs / "worker.log",
        "org.apache.spark.deploy.worker.Worker",
        *("--host", "127.0.0.1", "--cores", "2", "--memory", "1g", "--webui-port", str(worker_ui), url),
    )
    try:
        deadline = time.monotonic() + 180
        while _alive_workers(ui) < 1:
            if time.monotonic() > deadline or master.poll() is not None or worker.poll() is not None:
                pytest.fail(f"the standalone cluster did not come up; logs in {logs}")
            time.sleep(1)
        yield url
    finally:
        for process in (worker, master):
            process.terminate()
        for process in (worker, master):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_standalone_master_and_worker_run_the_job(standalone, params, tmp_path, monkeypatch):
    monkeypatch.delenv(spark_engine.MASTER_ENV, raising=False)
    source = planted_folder(tmp_path / "raw")
    # The executors reach the driver on 127.0.0.1; settings as a deployment would give them.
    cluster = EngineParams(
        name="spark",
        spark_master=standalone,
        spark_conf={"spark.driver.host": "127.0.0.1", "spark.executor.memory": "512m", "spark.cores.max": "2"},
    )
    local = run_stages(source, params, EngineParams(name="local"), tmp_path / "local")
    with spark_engine.session(cluster, "cluster test") as spark:
        assert spark.sparkContext.master == standalone
        on_cluster = run_stages(source, params, cluster, tmp_path / "spark")
        executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size()
    assert executors >= 2  # the driver and at least one executor on the worker
    assert_same_outputs(tmp_path / "local", local, tmp_path / "spark", on_cluster)

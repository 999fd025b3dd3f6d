"""The cluster path: a standalone Spark master and one worker, started on 127.0.0.1 from PySpark's
own launcher classes (bench/spark_standalone.py), run clean and split with the executors in a JVM
of their own; the files are the local engine's, part for part."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator

import pytest
from spark_support import assert_same_outputs, needs_java, planted_folder, run_stages
from support import ROOT

from pipeline.engines import spark as spark_engine
from pipeline.params import EngineParams

pytestmark = [pytest.mark.spark, pytest.mark.integration, needs_java]


def _launcher():
    spec = importlib.util.spec_from_file_location("spark_standalone", ROOT / "bench" / "spark_standalone.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["spark_standalone"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def standalone(tmp_path_factory) -> Iterator[str]:
    with _launcher().standalone(cores=2, memory="1g", logs=tmp_path_factory.mktemp("spark-logs")) as url:
        yield url


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

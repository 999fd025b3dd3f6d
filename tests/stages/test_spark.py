"""engine.name: spark runs clean and split on a real PySpark `local[2]` session (one for the
module) and gives the local engine's files, metrics, report and split."""

from __future__ import annotations

import importlib.util
import sys

import pandas as pd
import pytest
from spark_support import LENIENT, assert_same_outputs, needs_java, planted_folder, run_stages
from support import ROOT

from pipeline.engines import spark as spark_engine
from pipeline.params import EngineParams
from stages import clean

pytestmark = [pytest.mark.spark, needs_java]

LOCAL = EngineParams(name="local")
# Tiny file splits, so that a table is read in several partitions and rows must be put back in order.
SPARK = EngineParams(name="spark", spark_master="local[2]", spark_conf={"spark.sql.files.maxPartitionBytes": "16k"})


@pytest.fixture(scope="module", autouse=True)
def session():
    """One session for the module: the engine reuses an active session instead of starting one."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv(spark_engine.MASTER_ENV, raising=False)  # the master these tests name, not the caller's
        with spark_engine.session(SPARK, "tests") as spark:
            yield spark


def test_planted_table_same_as_the_local_engine(params, tmp_path):
    source = planted_folder(tmp_path / "raw")
    local = run_stages(source, params, LOCAL, tmp_path / "local")
    spark = run_stages(source, params, SPARK, tmp_path / "spark")
    assert_same_outputs(tmp_path / "local", local, tmp_path / "spark", spark)
    quarantine = pd.read_parquet(tmp_path / "spark" / "quarantine.parquet")
    assert list(quarantine["row"]) == [3, 80, 120, 197, 198, 199]
    assert list(quarantine["reason"]) == [
        "feature value above range: px_7=99 outside [0, 16]",
        "exact duplicate of an earlier row",
        "exact duplicate of an earlier row",
        "unknown label 42",
        "missing feature value: px_5=nan",
        "exact duplicate of an earlier row",
    ]


def test_failure_names_the_check_and_writes_nothing(params, tmp_path):
    source = planted_folder(tmp_path / "raw")
    strict = LENIENT.model_copy(update={"max_quarantine_share": 0.01})
    with pytest.raises(clean.ValidationFailed) as error:
        run_stages(source, params, SPARK, tmp_path / "out", clean_params=strict)
    assert "3.0% of rows would be quarantined" in str(error.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_master_from_the_environment_overrides_params(monkeypatch):
    monkeypatch.delenv(spark_engine.MASTER_ENV, raising=False)
    assert spark_engine.master(SPARK) == "local[2]"
    monkeypatch.setenv(spark_engine.MASTER_ENV, "spark://10.0.0.5:7077")
    assert spark_engine.master(SPARK) == "spark://10.0.0.5:7077"


def _bench():
    spec = importlib.util.spec_from_file_location("data_stages", ROOT / "bench" / "data_stages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["data_stages"] = module
    spec.loader.exec_module(module)
    return module


# More than ten minutes of Spark on two cores (784 feature columns, each checked on the cluster):
# in `make test-slow`, not in `make test`.
@pytest.mark.slow
@pytest.mark.integration
def test_70k_synthetic_table_same_as_the_local_engine(params, tmp_path):
    """MNIST-shaped, 70,000 rows x 785 columns in 65,536-row groups, duplicates across them and
    unknown labels in the last one."""
    bench = _bench()
    raw = tmp_path / "raw.parquet"
    planted = bench.make_table(70_000, raw)
    contract, clean_params = bench.contract(), bench.params("local").clean
    local = run_stages(raw, params, LOCAL, tmp_path / "local", contract, clean_params)
    spark = run_stages(raw, params, SPARK, tmp_path / "spark", contract, clean_params)
    assert_same_outputs(tmp_path / "local", local, tmp_path / "spark", spark)
    assert spark["metrics"]["rows_quarantined"] == planted["duplicates"] + planted["unknown_labels"]

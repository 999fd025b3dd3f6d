"""engine.name: spark runs clean and split on a real PySpark `local[2]` session (one for the
module) and gives the local engine's files part for part, byte for byte, with the same metrics
and report: on a planted dirty table, on a mixed-type contract, and on 70,000 labels split as an
independent reference computes them."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mixed_data import data_section, mixed_table
from spark_support import LENIENT, PLANTED, SMALL_UNITS, assert_same_outputs, needs_java, planted_folder, run_stages
from split_reference import reference_split
from support import ROOT, S3_ENV, moto_s3

from pipeline import parts
from pipeline.engines import spark as spark_engine
from pipeline.params import DataParams, EngineParams, SplitParams
from stages import clean, split

pytestmark = [pytest.mark.spark, needs_java]
BUCKET = "data-bucket"

# Units of ~80 digit rows, so that a table is several tasks and parts, and rows must keep their order.
LOCAL = EngineParams(name="local", **SMALL_UNITS)
SPARK = EngineParams(name="spark", spark_master="local[2]", **SMALL_UNITS)


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with a bucket; its endpoint and throwaway credentials are in
    the environment before Spark starts, so the executors (which inherit it) reach it too."""
    with moto_s3(BUCKET) as endpoint, pytest.MonkeyPatch.context() as env:
        for name in [k for k in os.environ if k.startswith("AWS_")]:
            env.delenv(name)
        for name, value in {**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}.items():
            env.setenv(name, value)
        yield endpoint


@pytest.fixture(scope="module", autouse=True)
def session(s3):
    """One session for the module: the engine reuses an active session instead of starting one."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv(spark_engine.MASTER_ENV, raising=False)  # the master these tests name, not the caller's
        with spark_engine.session(SPARK, "tests") as spark:
            yield spark


def test_planted_dirty_table_same_as_the_local_engine(params, tmp_path):
    source = planted_folder(tmp_path / "raw")
    local = run_stages(source, params, LOCAL, tmp_path / "local")
    spark = run_stages(source, params, SPARK, tmp_path / "spark")
    assert_same_outputs(tmp_path / "local", local, tmp_path / "spark", spark)
    assert len(list((tmp_path / "spark" / "clean.parquet").iterdir())) == 4  # a.parquet's 3 row groups, b.csv
    quarantine = pd.read_parquet(tmp_path / "spark" / "quarantine.parquet")
    assert dict(zip(quarantine["row"], quarantine["reason"], strict=True)) == PLANTED
    assert spark["metrics"]["reasons"]["not a number"] == 2


@pytest.mark.s3
def test_executors_read_objects_in_a_bucket(s3, params, tmp_path):
    """The planted folder as objects in a bucket: the executors read them (the driver lists them
    and reads their footers) and write what the local engine writes from the folder on disk."""
    source = planted_folder(tmp_path / "raw")
    bucket = boto3.client("s3", endpoint_url=s3, region_name=S3_ENV["AWS_DEFAULT_REGION"])
    for path in source.iterdir():
        bucket.put_object(Bucket=BUCKET, Key=f"raw/{path.name}", Body=path.read_bytes())
    local = run_stages(source, params, LOCAL, tmp_path / "local")
    spark = run_stages(f"s3://{BUCKET}/raw/", params, SPARK, tmp_path / "spark")
    assert_same_outputs(tmp_path / "local", local, tmp_path / "spark", spark)


def test_failure_names_the_check_and_writes_nothing(params, tmp_path):
    source = planted_folder(tmp_path / "raw")
    strict = LENIENT.model_copy(update={"max_quarantine_share": 0.01})
    with pytest.raises(clean.ValidationFailed) as error:
        run_stages(source, params, SPARK, tmp_path / "out", clean_params=strict)
    assert "4.0% of rows would be quarantined" in str(error.value)
    assert 'e.g. row 20: px_5: "oops" is not a number' in str(error.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_mixed_contract_and_int64_ids_same_as_the_local_engine(params, tmp_path):
    """Categorical columns, an undeclared category, gaps filled by policy, and an int64 id above
    2**53: two rows that differ only by 1 in it are not duplicates; a repeated row is."""
    table = mixed_table(200)
    table["tag"] = np.int64(2**60) + np.arange(len(table), dtype=np.int64) * 2
    table.iloc[11] = table.iloc[10]
    table.loc[11, "tag"] = table.loc[10, "tag"] + 1  # 2**60 + 21: the same double as 2**60 + 20
    table.iloc[30] = table.iloc[5]  # an exact duplicate
    table.loc[40, "island"] = "Atlantis"
    raw = tmp_path / "penguins.parquet"
    table.to_parquet(raw, row_group_size=50)
    contract = DataParams.model_validate(
        data_section("impute", {"island": {"categories": ["Biscoe", "Dream", "Torgersen"]}})
    )
    mixed = params.model_copy(update={"split": SplitParams(folds=[0, 1])})
    units = {"unit_mb": 0.01}  # 50-row row groups of ~144 bytes a row: one unit each
    local = run_stages(raw, mixed, LOCAL.model_copy(update=units), tmp_path / "local", contract)
    spark = run_stages(raw, mixed, SPARK.model_copy(update=units), tmp_path / "spark", contract)
    assert_same_outputs(tmp_path / "local", local, tmp_path / "spark", spark)
    quarantine = pd.read_parquet(tmp_path / "spark" / "quarantine.parquet")
    assert quarantine["row"].tolist() == [30, 40]
    assert quarantine["reason"].tolist()[0] == "exact duplicate of an earlier row"
    kept = pd.read_parquet(tmp_path / "spark" / "clean.parquet")
    assert kept["tag"].dtype == np.int64 and kept.loc[10:11, "tag"].tolist() == [2**60 + 20, 2**60 + 21]


def test_70k_labels_split_as_the_reference_computes(tmp_path):
    """Split alone, on a clean table of 70,000 rows in three parts (labels and one feature): each
    row's split and fold is the independent reference computation's, and the local engine writes
    the same parts byte for byte."""
    rng = np.random.default_rng(11)
    labels = rng.choice(10, 70_000, p=np.linspace(1, 2, 10) / np.linspace(1, 2, 10).sum()).astype(np.uint8)
    table = tmp_path / "clean.parquet"
    table.mkdir()
    for i, (start, stop) in enumerate([(0, 30_000), (30_000, 30_000), (30_000, 70_000)]):  # one part empty
        part = pa.table({"label": labels[start:stop], "px_0": np.zeros(stop - start, np.uint8)})
        pq.write_table(part, table / parts.part_name(i))
    contract = DataParams(source="", label="label", feature_prefix="px_", classes=list(range(10)))
    params = SplitParams(seed=42, val_fraction=0.15, test_fraction=0.15, folds=[0, 1, 2, 3, 4])
    on_spark = split.run_file(str(table), contract, params, SPARK, str(tmp_path / "spark"))
    on_local = split.run_file(str(table), contract, params, LOCAL, str(tmp_path / "local"))
    assert on_spark == on_local
    for i in range(3):
        name = parts.part_name(i)
        assert (tmp_path / "spark" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assignment = pd.read_parquet(tmp_path / "spark")
    expected_split, expected_fold = reference_split(labels, 0.15, 0.15, 42, 5)
    assert assignment["row"].tolist() == list(range(70_000))
    assert assignment["split"].astype(str).tolist() == expected_split
    assert assignment["fold"].tolist() == expected_fold


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


# Minutes of Spark on two cores (785 columns, 70,000 rows): in `make test-slow`, not `make test`;
# the small tables above run the same path in `make test`.
@pytest.mark.slow
@pytest.mark.integration
def test_70k_synthetic_table_same_as_the_local_engine(params, tmp_path):
    """MNIST-shaped, 70,000 rows x 785 columns in 65,536-row groups, duplicates across them and
    unknown labels in the last one."""
    bench = _bench()
    raw = tmp_path / "raw.parquet"
    planted = bench.make_table(70_000, raw)
    contract, clean_params = bench.contract(), bench.params("local").clean
    local = run_stages(raw, params, EngineParams(name="local"), tmp_path / "local", contract, clean_params)
    spark = run_stages(
        raw, params, EngineParams(name="spark", spark_master="local[2]"), tmp_path / "spark", contract, clean_params
    )
    assert_same_outputs(tmp_path / "local", local, tmp_path / "spark", spark)
    assert spark["metrics"]["rows_quarantined"] == planted["duplicates"] + planted["unknown_labels"]

"""A Spark session for the data stages: the master, the settings, and what is missing when there is none.

The master is `SPARK_MASTER` from the environment when set (what an Airflow task takes from the
Connection `spark_default`), else `engine.spark_master` in params. PySpark and a Java runtime are
checked before anything else runs, each with the message the docs promise (`MISSING_PYSPARK`,
`MISSING_JAVA`), not a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator

from pipeline.params import EngineParams
from pipeline.tables import TableError

log = logging.getLogger(__name__)

MASTER_ENV = "SPARK_MASTER"
MISSING_PYSPARK = (
    "engine.name is spark but PySpark is not installed: install the project with its `spark` extra "
    "(pip install -e '.[spark]'), or set engine.name: local"
)
MISSING_JAVA = "engine.name is spark but no Java runtime was found: install Java 17, or set engine.name: local"


class EngineMissing(TableError):
    """engine.name is spark, but PySpark or Java is not there."""


def master(engine: EngineParams) -> str:
    return os.environ.get(MASTER_ENV) or engine.spark_master


def require_spark() -> None:
    """EngineMissing, with the documented message, unless PySpark imports and a Java runtime is
    there: checked before a stage reads anything, so the cause is the first thing the user sees."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise EngineMissing(MISSING_PYSPARK) from None
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise EngineMissing(MISSING_JAVA)


SHUFFLE_PARTITION_BYTES = 64 << 20  # rows of a shuffle (hashes, labels) per partition


def size_shuffles(spark, engine: EngineParams, rows: int, row_bytes: int) -> None:
    """Shuffle partitions for `rows` narrow rows: enough for every core, about 64 MB each. Spark's
    200 by default cost more in scheduling than the work itself on tables of a few million rows
    (split at 700k rows: 19 s with 200, 9 s with 4, measured). Unless engine.spark_conf sets them."""
    if "spark.sql.shuffle.partitions" in engine.spark_conf:
        return
    wanted = max(spark.sparkContext.defaultParallelism, -(-rows * row_bytes // SHUFFLE_PARTITION_BYTES))
    spark.conf.set("spark.sql.shuffle.partitions", str(wanted))


@contextlib.contextmanager
def session(engine: EngineParams, app: str) -> Iterator:
    """A Spark session on the configured master, stopped on exit (an active one is reused as is)."""
    require_spark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    url = master(engine)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors run the same interpreter
    conf = {
        "spark.ui.enabled": "false",  # a batch job: no web UI on port 4040, no progress bars
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        # Executors read and write Arrow batches with pyarrow (mapInArrow); a unit of work is one task.
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if url.startswith("local"):
        conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
    builder = SparkSession.builder.master(url).appName(f"triton-retrain {app}")
    for key, value in {**conf, **engine.spark_conf}.items():
        builder = builder.config(key, value)
    log.info("Spark master %s", url)
    # py4j's finalizers log "Closing down clientserver connection" at INFO, even at interpreter exit
    # after the log streams are closed ("--- Logging error ---"); the line tells a user nothing.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        yield spark
    finally:
        spark.stop()

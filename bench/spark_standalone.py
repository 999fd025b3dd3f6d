"""A real standalone Spark cluster on 127.0.0.1: a master and one worker, started from PySpark's own
launcher classes (no download; Java 17 and the `spark` extra), stopped by their process ids.

Used by bench/data_stages.py (one and then two executor cores, the driver in a process of its own)
and by tests/stages/test_spark_cluster.py.

    with standalone(cores=2, memory="4g") as master:   # "spark://127.0.0.1:<port>"
        ...
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from devtools.ports import free_ports


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _start(log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "PYSPARK_PYTHON": sys.executable}
    with log.open("w") as out:
        return subprocess.Popen(
            [str(spark_home() / "bin" / "spark-class"), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as answer:  # noqa: S310 - 127.0.0.1
            return int(json.load(answer).get("aliveworkers", 0))
    except OSError:
        return 0


@contextlib.contextmanager
def standalone(cores: int = 2, memory: str = "2g", logs: Path | None = None, timeout_s: float = 180) -> Iterator[str]:
    """A master and a worker with `cores` cores and `memory`; yields the master URL."""
    folder = Path(logs or tempfile.mkdtemp(prefix="spark-logs-"))
    folder.mkdir(parents=True, exist_ok=True)
    port, ui, worker_ui = free_ports(3)
    url = f"spark://127.0.0.1:{port}"
    master = _start(
        folder / "master.log",
        "org.apache.spark.deploy.master.Master",
        *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)),
    )
    worker = _start(
        folder / "worker.log",
        "org.apache.spark.deploy.worker.Worker",
        *("--host", "127.0.0.1", "--cores", str(cores), "--memory", memory, "--webui-port", str(worker_ui), url),
    )
    try:
        deadline = time.monotonic() + timeout_s
        while alive_workers(ui) < 1:
            if time.monotonic() > deadline or master.poll() is not None or worker.poll() is not None:
                raise RuntimeError(f"the standalone cluster did not come up; logs in {folder}")
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

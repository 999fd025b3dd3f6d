"""The Spark master of the data stages (clean and split on `engine.name: spark`) from an Airflow
Connection, read the way Airflow's Spark provider reads one; a stage task hands it to DVC's stage
command as SPARK_MASTER (what pipeline/engines/spark.py reads)."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestration.params import ProjectParams

log = logging.getLogger(__name__)


def spark_env(params: ProjectParams) -> dict[str, str]:
    """SPARK_MASTER (what pipeline/engines/spark.py reads) from the Airflow Connection
    `airflow.spark_conn_id`, when the project's clean and split run on `engine.name: spark`; {}
    otherwise or without it."""
    if params.engine.name != "spark":
        return {}
    conn_id = params.airflow.spark_conn_id
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        log.info("no Airflow Connection %r: the Spark master is engine.spark_master (or SPARK_MASTER)", conn_id)
        return {}
    master = spark_master_url(conn.host, conn.port)
    log.info("Spark master from Connection %r: %s", conn_id, master)
    return {"SPARK_MASTER": master}


def spark_master_url(host: str | None, port: int | None) -> str:
    """The master URL of an Airflow Spark Connection, read the way Airflow's Spark provider does:
    the host is `spark://name`, a bare name (spark:// is added), `yarn`, `local[*]` or `k8s://...`;
    the port, when given, is appended to a host that has none."""
    from airflow.sdk.exceptions import AirflowFailException

    host = (host or "").strip().rstrip("/")
    if not host:
        raise AirflowFailException("the Spark Connection has no host: give spark://<master>, yarn or local[*]")
    if host.startswith(("yarn", "local")):
        return host
    if "://" not in host:
        host = f"spark://{host}"
    has_port = re.search(r":\d+$", host.split("://", 1)[1]) is not None
    return f"{host}:{port}" if port and not has_port else host

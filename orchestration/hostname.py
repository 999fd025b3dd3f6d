"""The host name Airflow records for this process (`[core] hostname_callable`).

On separate hosts every worker has its own machine name, and that is what this returns. Several
workers on one machine (the local cluster) get a name each from `RETRAIN_WORKER_NAME`, so a task
instance says which worker ran it. Imported by every Airflow process: standard library only.
"""

from __future__ import annotations

import os
import socket

WORKER_NAME_ENV = "RETRAIN_WORKER_NAME"


def worker_hostname() -> str:
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()

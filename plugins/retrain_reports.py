"""Airflow plugin: the retrain DAG's reports, read-only, in the api-server (see orchestration/reports_ui.py).

`make airflow` and `make run` point `[core] plugins_folder` here; elsewhere, copy this file into the
deployment's plugins folder (the project must be importable and RETRAIN_PROJECT_DIR set, as for the DAG).
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin

from orchestration.reports_ui import URL_PREFIX, LazyApp, ReportsLink, create_app

PROJECT = Path(os.environ.get("RETRAIN_PROJECT_DIR") or Path(__file__).resolve().parents[1])


class RetrainReportsPlugin(AirflowPlugin):
    name = "retrain_reports"
    fastapi_apps = [{"app": LazyApp(lambda: create_app(PROJECT)), "url_prefix": URL_PREFIX, "name": "Retrain reports"}]
    operator_extra_links = [ReportsLink()]

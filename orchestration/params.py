"""The `airflow:` section of params.yaml, and the whole file as the orchestration reads it.

`ProjectParams` checks every section, each with its owner's schema: the pipeline's
(pipeline/params.py), `serving:` (serving/params.py), `rollout:` (serving/rollout/params.py),
`gate:` (stages/gate.py), `sweep:` (orchestration/sweep/params.py) and `airflow:` (here, with its
`live_drift:`). The DAG file, the Airflow tasks and the local tooling load it; a DVC stage loads only the
pipeline's sections, so a change to these schemas reruns no stage.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from orchestration.sweep.params import SweepParams, space_problems
from pipeline.params import DEFAULT_PATH, PipelineParams, Positive, Section, parse_as, read_params
from serving.params import ServingParams
from serving.rollout.params import RolloutParams
from stages.gate import GateParams


class LiveDriftParams(Section):
    """The live drift check (dags/live_drift.py, orchestration/live_drift.py): the live sample against
    the serving version's reference, every `interval_s`; a drift starts the retrain DAG, and so does
    labelled accuracy below `gate.floors` on the labels that came back in the interval."""

    interval_s: Annotated[float, Field(gt=0.0)] | None = 3600.0
    min_rows: Positive = 500
    min_labels: Positive = 200
    dag_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "live_drift"
    asset: Annotated[str, Field(min_length=1)] = "live_drift"


class AirflowParams(Section):
    """The retraining DAG: schedule, queues, pools, approval."""

    dag_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "retrain"
    schedule: str | None = "0 3 * * 1"
    data_asset: str | None = "raw_data"
    start_date: str = "2026-01-05"
    catchup: bool = False
    demo_batches: bool = True
    gpu_stages: list[str] = ["train", "crossval", "export"]
    gpu_queue: str = "gpu"
    gpu_pool: str = "gpu"
    gpu_pool_slots: Positive = 1
    evaluate_stage: str = "evaluate"
    drift_stage: str | None = "drift"
    require_approval: bool = False
    approval_timeout_h: Annotated[float, Field(gt=0.0)] = 72.0
    git_remote: str = ".airflow/workspace.git"
    git_branch: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")] = "main"
    worker_root: str = ".airflow/worker"
    worker_keep_runs: Positive = 2
    dvc_remote: str | None = ".dvc-remote"
    dvc_remote_conn_id: str = "dvc_remote_default"
    triton_conn_id: str = "triton_default"
    notify_conn_id: str = "retrain_notify"
    spark_conn_id: str = "spark_default"
    source_conn_id: str = "aws_default"
    source_poll_s: Annotated[float, Field(gt=0.0)] = 60.0
    stage_timeout_min: Positive = 120
    infra_retries: Annotated[int, Field(ge=0)] = 3
    infra_retry_delay_s: Annotated[float, Field(gt=0.0)] = 10.0
    tag_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "model-v"
    registry_stage: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")] = "prod"
    git_author: str = "retrain-bot <retrain-bot@localhost>"
    live_drift: LiveDriftParams = LiveDriftParams()

    @model_validator(mode="after")
    def _check(self) -> AirflowParams:
        try:
            dt.date.fromisoformat(self.start_date)
        except ValueError:
            raise ValueError(f"start_date must be a date YYYY-MM-DD, got {self.start_date!r}") from None
        if not re.fullmatch(r"[^<>]+ <[^<>@\s]+@[^<>\s]+>", self.git_author):
            raise ValueError(f"git_author must look like 'Name <email>', got {self.git_author!r}")
        return self


class ProjectParams(PipelineParams):
    """All of params.yaml, every section checked by its owner's schema."""

    serving: ServingParams = ServingParams()
    rollout: RolloutParams = RolloutParams()
    gate: GateParams = GateParams()
    airflow: AirflowParams = AirflowParams()
    sweep: SweepParams = SweepParams()

    @model_validator(mode="after")
    def _check_sweep(self) -> ProjectParams:
        # Every value the sweep may write must fit `train:`: a bad space fails here, before any trial.
        problems = space_problems(self.sweep, self.train)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def live_drift_on(self) -> bool:
        """The live check runs only while the server keeps a sample and an interval is set."""
        return self.serving.sample.rate > 0.0 and self.airflow.live_drift.interval_s is not None


def parse_project_params(raw: Any, source: str = "params") -> ProjectParams:
    """Validate an already-parsed mapping; raises ParamsError naming every bad key."""
    return parse_as(ProjectParams, raw, source)


def load_project_params(path: str | Path = DEFAULT_PATH) -> ProjectParams:
    """Read and validate the whole of params.yaml."""
    return parse_as(ProjectParams, read_params(path), str(path))

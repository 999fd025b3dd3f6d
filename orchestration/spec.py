"""What the retraining DAG declares, computed from `dvc.yaml` and `params.yaml` alone.

Kept apart from the DAG file so that it can be tested without Airflow, and light enough for parse
time: PyYAML and the params schema (pydantic), nothing that trains, serves or runs DVC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from orchestration.drift_reference import DriftStageError, drift_paths
from orchestration.dvc_graph import JOIN, Stage, StageGraph, read_graph
from orchestration.params import AirflowParams, ProjectParams, load_project_params

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class SpecError(ValueError):
    """params.yaml and dvc.yaml disagree (e.g. a GPU stage that dvc.yaml does not have)."""


@dataclass(frozen=True)
class StageTask:
    stage: Stage
    task_id: str  # the task's id inside its group (`0` for `crossval@0`)
    group_id: str | None  # TaskGroup of a foreach/matrix stage (`crossval`)
    gpu: bool
    upstream: tuple[str, ...]  # DVC names of the stages it waits for (transitively reduced)

    @property
    def full_id(self) -> str:
        return self.task_id if self.group_id is None else f"{self.group_id}.{self.task_id}"

    def doc_md(self) -> str:
        where = "a **GPU worker** (queue and pool from `airflow.gpu_*`)" if self.gpu else "any worker"
        deps = ", ".join(f"`{d}`" for d in self.stage.deps) or "none"
        outs = ", ".join(f"`{o}`" for o in self.stage.outs) or "none"
        return (
            f"### DVC stage `{self.stage.name}`\n\n{self.stage.desc}\n\n"
            f"Runs on {where}, in a checkout of the run's commit of its own: pulls its inputs from the "
            "DVC remote, then DVC decides what really runs. With unchanged deps, params and command it "
            "is **up to date** in seconds; when any worker already ran it on these inputs it is "
            "**restored** from DVC's run cache; otherwise its command **runs**. Pushes its outputs and "
            "run-cache entry, and returns its `dvc.lock` entry. A failing command fails the task at "
            "once; an unreachable remote or a lost worker is retried with backoff.\n\n"
            f"- command: `{self.stage.cmd}`\n- deps: {deps}\n- outs: {outs}\n"
        )


@dataclass(frozen=True)
class PipelineSpec:
    project: Path
    params: ProjectParams
    graph: StageGraph
    stage_tasks: list[StageTask]

    @property
    def airflow(self) -> AirflowParams:
        return self.params.airflow

    def evaluate_args(self) -> dict[str, str]:
        """The evaluate stage's `--candidate/--clean/--split/--metrics`: what the gate and push reuse."""
        name = self.airflow.evaluate_stage
        if name not in self.graph.stages:
            raise SpecError(f"airflow.evaluate_stage: dvc.yaml has no stage {name!r}")
        args = self.graph.stages[name].cli_args()
        missing = [k for k in ("candidate", "clean", "split", "metrics") if k not in args]
        if missing:
            raise SpecError(f"airflow.evaluate_stage {name!r}: its cmd has no {['--' + m for m in missing]}")
        return {k: args[k] for k in ("candidate", "clean", "split", "metrics")}


def is_gpu(stage: Stage, params: AirflowParams) -> bool:
    """Named in `airflow.gpu_stages` (a foreach group counts for all its items) or `meta: {gpu: true}`."""
    return stage.group in params.gpu_stages or stage.name in params.gpu_stages or stage.meta.get("gpu") is True


def stage_tasks(graph: StageGraph, params: AirflowParams) -> list[StageTask]:
    known = set(graph.stages) | {s.group for s in graph.stages.values()}
    unknown = [name for name in params.gpu_stages if name not in known]
    if unknown:
        raise SpecError(f"airflow.gpu_stages names {unknown}, which dvc.yaml does not have (stages: {sorted(known)})")
    tasks = []
    for stage in graph.stages.values():
        if stage.key is None:
            task_id, group_id = stage.name, None
        else:
            task_id, group_id = _UNSAFE.sub("_", stage.key), stage.group
        tasks.append(
            StageTask(
                stage=stage,
                task_id=task_id,
                group_id=group_id,
                gpu=is_gpu(stage, params),
                upstream=tuple(sorted(graph.reduced_upstream(stage.name))),
            )
        )
    ids = [t.full_id for t in tasks]
    clash = {i for i in ids if ids.count(i) > 1}
    if clash:
        raise SpecError(f"stage names map to the same Airflow task ids {sorted(clash)}; rename them in dvc.yaml")
    return tasks


def pipeline_spec(project: str | Path) -> PipelineSpec:
    """Read and check params.yaml and dvc.yaml of the project."""
    project = Path(project)
    params = load_project_params(project / "params.yaml")
    graph = read_graph(project)
    spec = PipelineSpec(project=project, params=params, graph=graph, stage_tasks=stage_tasks(graph, params.airflow))
    spec.evaluate_args()  # fail at parse time, not after an hour of training
    try:
        drift_paths(graph, params.airflow.drift_stage)
    except DriftStageError as error:
        raise SpecError(str(error)) from None
    return spec


__all__ = ["JOIN", "PipelineSpec", "SpecError", "StageTask", "pipeline_spec"]

"""The DAG file as Airflow's DagBag sees it: no import errors, nothing heavy imported at parse time,
one task per DVC stage wired like dvc.yaml, GPU stages on the GPU queue and pool.

Parsing happens in a fresh interpreter (so `sys.modules` shows only what the DAG file pulled in),
which prints what the tests check as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.spec import pipeline_spec

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "great_expectations", "tritonclient", "onnx", "onnxruntime", "sklearn", "pandas", "dvc")

PARSE = """
import json, sys, time
heavy = {heavy!r}
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(dag_folder={dags!r})
parse_s = time.perf_counter() - started
dag = bag.dags.get("retrain")
out = {{
    "import_errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
    "parse_s": parse_s,
    "file_parse_s": [s.duration for s in bag.dagbag_stats] if hasattr(bag, "dagbag_stats") else None,
}}
if dag is not None:
    out["description"] = dag.description
    out["doc_md"] = dag.doc_md
    out["max_active_runs"] = dag.max_active_runs
    out["timetable"] = type(dag.timetable).__name__
    out["params"] = {{k: dag.params.get_param(k).serialize() for k in dag.params}}
    out["tasks"] = {{
        t.task_id: {{
            "upstream": sorted(t.upstream_task_ids),
            "queue": t.queue,
            "pool": t.pool,
            "retries": t.retries,
            "doc_md": t.doc_md,
            "op_kwargs": getattr(t, "op_kwargs", {{}}),
            "outlets": [getattr(o, "uri", str(o)) for o in t.outlets],
            "on_failure_callback": bool(t.on_failure_callback),
            "links": [link.name for link in t.operator_extra_links],
            "multiple_outputs": getattr(t, "multiple_outputs", False),
        }}
        for t in dag.tasks
    }}
print("JSON" + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def parsed(make_airflow_home) -> dict:
    env = make_airflow_home(ROOT / "dags")
    script = PARSE.format(heavy=HEAVY, dags=str(ROOT / "dags"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("JSON"))
    return json.loads(line[4:])


@pytest.fixture(scope="module")
def spec():
    return pipeline_spec(ROOT)


def test_dag_imports_without_errors_or_heavy_modules(parsed: dict) -> None:
    assert parsed["import_errors"] == {}
    assert parsed["heavy"] == [], f"parsing the DAG file imported {parsed['heavy']}"
    assert "tasks" in parsed, "no DAG with id 'retrain' was found"


def test_one_task_per_dvc_stage_wired_like_dvc_yaml(parsed: dict, spec) -> None:
    tasks = parsed["tasks"]
    by_stage = {t.stage.name: t.full_id for t in spec.stage_tasks}
    assert set(by_stage) == set(spec.graph.stages)
    assert {tasks[i]["op_kwargs"]["stage"] for i in by_stage.values()} == set(spec.graph.stages)
    # each stage task reads the results (dvc.lock entries) of exactly its ancestors
    for name, task_id in by_stage.items():
        expected = sorted(by_stage[a] for a in spec.graph.ancestors(name))
        assert sorted(tasks[task_id]["op_kwargs"]["ancestors"]) == expected, name
    # approve is in every run's graph; a run whose require_approval is off approves at once
    assert set(tasks) == {*by_stage.values(), "prepare_workspace", "gate", "approve", "push", "publish"}

    # Airflow's ordering equals DVC's: the same ancestors for every stage (Airflow keeps only the
    # direct edges of a transitive reduction; DVC lists every dep).
    def ancestors(task_id: str) -> set[str]:
        seen, todo = set(), list(tasks[task_id]["upstream"])
        while todo:
            up = todo.pop()
            if up not in seen:
                seen.add(up)
                todo.extend(tasks[up]["upstream"])
        return seen

    for name, task_id in by_stage.items():
        expected = {by_stage[a] for a in spec.graph.ancestors(name)} | {"prepare_workspace"}
        assert ancestors(task_id) == expected, name
    # foreach items are parallel: no fold waits for another
    folds = [by_stage[n] for n in spec.graph.groups()["crossval"]]
    assert len(folds) == len(spec.params.split.folds)
    assert all(not set(tasks[f]["upstream"]) & set(folds) for f in folds)
    # the tail: every stage before the gate, then push, then publish, which takes the push's and
    # prepare_workspace's values as its arguments (TaskFlow), not through xcom_pull
    assert ancestors("gate") >= set(by_stage.values())
    assert "gate" in ancestors("push") and tasks["publish"]["upstream"] == ["prepare_workspace", "push"]


def test_every_stage_task_and_the_gate_link_their_reports(parsed: dict, spec) -> None:
    tasks = parsed["tasks"]
    for task_id in [*(t.full_id for t in spec.stage_tasks), "gate"]:
        assert "Reports" in tasks[task_id]["links"], task_id
    assert "explain" in {t.stage.name for t in spec.stage_tasks}  # reports/explain.html's button


def test_each_task_keeps_its_result_as_one_xcom(parsed: dict) -> None:
    """A TaskFlow task annotated `-> dict` also pushes every key as an XCom of its own by default:
    ten more writes per stage task (~0.3 s each task on one machine), read by nobody."""
    spread = [task_id for task_id, info in parsed["tasks"].items() if info["multiple_outputs"]]
    assert spread == []


def test_gpu_stages_carry_queue_and_pool(parsed: dict, spec) -> None:
    af = spec.airflow
    for task in spec.stage_tasks:
        info = parsed["tasks"][task.full_id]
        if task.stage.group in af.gpu_stages:
            assert (info["queue"], info["pool"]) == (af.gpu_queue, af.gpu_pool), task.full_id
        else:
            assert info["queue"] != af.gpu_queue and info["pool"] != af.gpu_pool, task.full_id
    assert {t.stage.group for t in spec.stage_tasks if t.gpu} == {"train", "crossval", "export"}


def test_retries_docs_and_description(parsed: dict, spec) -> None:
    tasks = parsed["tasks"]
    assert parsed["max_active_runs"] == 1
    assert parsed["description"] and "dvc.yaml" in parsed["description"]
    assert parsed["doc_md"] and "gate" in parsed["doc_md"]
    assert parsed["timetable"] == "AssetOrTimeSchedule"
    assert all(info["doc_md"] for info in tasks.values()), [k for k, v in tasks.items() if not v["doc_md"]]
    # infrastructure (a lost worker, an unreachable remote) retries; the gate never does, and a
    # failing stage command fails its task without retries (AirflowFailException)
    stage_ids = [t.full_id for t in spec.stage_tasks]
    retried = ["push", "publish", "prepare_workspace", *stage_ids]
    assert {tasks[i]["retries"] for i in retried} == {spec.airflow.infra_retries} and spec.airflow.infra_retries > 0
    assert tasks["gate"]["retries"] == 0


def test_parse_time_is_modest(parsed: dict) -> None:
    # Dominated by importing Airflow itself; the DAG file adds reading two YAML files.
    assert parsed["parse_s"] < 30


def test_approval_sits_between_gate_and_push_and_params_yaml_sets_its_default(
    project_copy: Path, make_airflow_home
) -> None:
    params = project_copy / "params.yaml"
    params.write_text(params.read_text().replace("require_approval: false", "require_approval: true"))
    env = make_airflow_home(project_copy / "dags")
    script = PARSE.format(heavy=HEAVY, dags=str(project_copy / "dags"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(next(x for x in result.stdout.splitlines() if x.startswith("JSON"))[4:])
    tasks = parsed["tasks"]
    assert tasks["approve"]["upstream"] == ["gate"]
    assert tasks["push"]["upstream"] == ["approve"]
    assert "metric diff" in tasks["approve"]["doc_md"]
    assert parsed["params"]["require_approval"]["value"] is True


def test_trigger_form_params_failure_callback_and_served_asset(parsed: dict, spec) -> None:
    form = parsed["params"]
    assert set(form) == {"require_approval", "data_source", "as_of", "note"}
    assert form["as_of"]["value"] is None and form["as_of"]["schema"]["type"] == ["null", "string"]
    assert form["require_approval"]["value"] is spec.airflow.require_approval
    assert form["require_approval"]["schema"]["type"] == "boolean"
    assert form["data_source"]["value"] is None and form["data_source"]["schema"]["type"] == ["null", "string"]
    # optional: a field the form may leave empty (a plain "string" is required in the form)
    assert form["note"]["value"] is None and form["note"]["schema"]["type"] == ["null", "string"]
    assert all(form[k]["description"] for k in form)
    # every task notifies its final failure (through the Connection, when there is one)
    assert all(t["on_failure_callback"] for t in parsed["tasks"].values())
    # (Airflow normalizes the URI with a trailing slash)
    outlets = [uri.rstrip("/") for uri in parsed["tasks"]["push"]["outlets"]]
    assert outlets == [f"triton://{spec.params.export.model_name}"]


def test_a_shadow_or_canary_rollout_sits_between_push_and_publish_and_emits_the_served_event(
    project_copy: Path, make_airflow_home, spec
) -> None:
    params = project_copy / "params.yaml"
    params.write_text(params.read_text().replace("  mode: direct ", "  mode: canary ", 1))
    env = make_airflow_home(project_copy / "dags")
    script = PARSE.format(heavy=HEAVY, dags=str(project_copy / "dags"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(next(x for x in result.stdout.splitlines() if x.startswith("JSON"))[4:])
    assert parsed["import_errors"] == {} and parsed["heavy"] == []
    tasks = parsed["tasks"]
    assert tasks["rollout"]["upstream"] == ["push"]
    assert "rollout" in tasks["publish"]["upstream"] and "push" not in tasks["publish"]["upstream"]
    # the push only starts the rollout: the rollout task says what serves, with the outcome
    assert tasks["push"]["outlets"] == []
    assert [uri.rstrip("/") for uri in tasks["rollout"]["outlets"]] == [f"triton://{spec.params.export.model_name}"]
    assert tasks["rollout"]["links"] == ["Reports"] and "Promote" in tasks["rollout"]["doc_md"]


def test_a_sweep_plans_maps_its_trials_on_the_gpu_queue_and_chooses_before_the_stages_that_read_train(
    project_copy: Path, make_airflow_home, spec
) -> None:
    params = project_copy / "params.yaml"
    params.write_text(
        params.read_text().replace(
            "  enabled: false            # true = the retrain DAG sweeps",
            "  enabled: true            # true = the retrain DAG sweeps",
            1,
        )
    )
    env = make_airflow_home(project_copy / "dags")
    script = PARSE.format(heavy=HEAVY, dags=str(project_copy / "dags"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(next(x for x in result.stdout.splitlines() if x.startswith("JSON"))[4:])
    assert parsed["import_errors"] == {} and parsed["heavy"] == [], parsed["heavy"]
    tasks = parsed["tasks"]
    ids = {t.stage.name: t.full_id for t in spec.stage_tasks}
    assert tasks["sweep.plan"]["upstream"] == sorted(ids[a] for a in spec.graph.ancestors("train"))
    assert tasks["sweep.trial"]["upstream"] == ["sweep.plan"]
    assert (tasks["sweep.trial"]["queue"], tasks["sweep.trial"]["pool"]) == (
        spec.airflow.gpu_queue,
        spec.airflow.gpu_pool,
    )
    assert tasks["sweep.choose"]["upstream"] == ["sweep.trial"]
    readers = {ids[n] for n, s in spec.graph.stages.items() if s.reads_params("train")}
    assert readers >= {ids["train"]} and len(readers) > 1  # train and the cross-validation folds
    for task, info in tasks.items():
        assert ("sweep.choose" in info["upstream"]) == (task in readers | {"publish"}), task
    # publish commits on the winner's commit
    assert "sweep.choose" in tasks["publish"]["upstream"]

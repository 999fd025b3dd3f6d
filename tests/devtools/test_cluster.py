"""The retraining DAG on a real local Celery cluster, driven through the scheduler's REST API (not
`airflow dags test`): Redis, Postgres, api-server, scheduler, dag-processor, triggerer and two
Celery workers (`cpu-1` on queue default, `gpu-1` on the GPU queue), started by
`devtools.cluster` on free ports, against a real local Triton (the Connection
`triton_default`).

One cluster and one copy of the project go through three runs, in order:
1. first run: every stage runs, version 1 serves; GPU stages ran on the GPU worker, everything
   else on the default worker (queue and hostname of each task instance);
2. same data again: no stage command runs, nothing is pushed;
3. more epochs: the GPU worker is killed (SIGKILL to its whole process tree, like a host that
   dies) while `train` runs; a fresh GPU worker with an empty workspace root and cache takes over,
   and the run still ends with the new model served.

To keep it quick on two cores the copy trains for a few epochs on two folds, with floors to match,
and has no schedule (the test triggers every run itself).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from support import edit_params, free_ports, local_triton

from devtools.airflow_api import AirflowApi, AirflowApiError
from devtools.cluster import commands, services
from devtools.cluster.database import pg_bin
from devtools.cluster.settings import DEFAULT_QUEUE, ClusterError, ClusterSettings
from orchestration.spec import pipeline_spec
from orchestration.workspace import Workspace

pytestmark = [pytest.mark.cluster, pytest.mark.airflow, pytest.mark.triton, pytest.mark.integration]

DAG_ID = "retrain"
# Demo mode: a run on 2026-01-26 sees the batches of 01-05 .. 01-26 (4 of 6). Each run needs its
# own logical date; hours apart on the same day, they all stand for that day's data.
RUN_DATE = "2026-01-26"
RUN_TIMEOUT_S = 1200
NOT_RAN = ("unchanged", "restored")
ROOT = Path(__file__).resolve().parents[2]
LOGS_KEPT = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / ".airflow" / "test-artifacts") / "cluster-logs"


def _missing_servers() -> list[str]:
    missing = [] if shutil.which("redis-server") else ["redis-server"]
    try:
        pg_bin("pg_ctl")
    except ClusterError:
        missing.append("postgresql (pg_ctl)")
    return missing


@pytest.fixture(scope="module", autouse=True)
def _servers_installed() -> None:
    missing = _missing_servers()
    if missing:
        pytest.skip(
            f"the local Celery cluster needs {', '.join(missing)}: install the Debian packages with "
            "`make cluster-deps` (root) or `apt-get install -y redis-server postgresql`"
        )


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with local_triton(tmp_path_factory.mktemp("triton")) as settings:
        yield settings


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, helpers) -> Path:
    project = helpers.copy_project(tmp_path_factory.mktemp("cluster-project"))
    edit_params(
        project,
        split__folds=[0, 1],
        train__epochs=6,
        gate__floors={"accuracy": 0.85, "f1_macro": 0.85},
        gate__max_regression={"accuracy": 0.02, "f1_macro": 0.02},
        airflow__schedule=None,  # runs come from the test only, never from the timetable
        airflow__data_asset=None,
    )
    return project


@dataclass(frozen=True)
class Cluster:
    settings: ClusterSettings
    env: dict[str, str]
    api: AirflowApi


@pytest.fixture(scope="module")
def running(project: Path, triton) -> Iterator[Cluster]:
    # Postgres runs as the `postgres` user, which must reach its data folder: pytest's own
    # temporary folders are private to root, so the cluster's state lives in a searchable one.
    state = Path(tempfile.mkdtemp(prefix="retrain-cluster-"))
    state.chmod(0o755)
    api_port, redis_port, postgres_port, triggerer_port, *log_ports = free_ports(6)
    base = ClusterSettings.default(project, state)
    settings = dataclasses.replace(
        base,
        api_port=api_port,
        redis_port=redis_port,
        postgres_port=postgres_port,
        triggerer_log_port=triggerer_port,
        workers=tuple(dataclasses.replace(w, log_port=p) for w, p in zip(base.workers, log_ports, strict=True)),
        heartbeat_timeout_s=60,  # the kill test waits this long for the scheduler to notice
    )
    connection = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": triton.http_port,
        # The test server restricts model control to its key; the workers get it as a real
        # deployment's would, through the Connection.
        "extra": {"model_repository": str(triton.repository), "control_key": triton.read_control_key()},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "TRITON_", "RETRAIN_"))}
    env["AIRFLOW_CONN_TRITON_DEFAULT"] = json.dumps(connection)
    try:
        commands.up(settings, env, triton=False)
        api = AirflowApi(settings.api_url)
        _wait_for_dag(api)
        api.set_paused(DAG_ID, False)
        yield Cluster(settings, env, api)
    finally:
        commands.down(settings)
        # Every process's and task's log stays as a test artifact, to read after a failure.
        shutil.rmtree(LOGS_KEPT, ignore_errors=True)
        shutil.copytree(settings.log_dir, LOGS_KEPT / "processes", dirs_exist_ok=True)
        if (settings.home / "logs").is_dir():
            shutil.copytree(settings.home / "logs", LOGS_KEPT / "tasks", dirs_exist_ok=True)
        shutil.rmtree(state, ignore_errors=True)


def _wait_for_dag(api: AirflowApi, timeout_s: float = 180) -> None:
    """The dag-processor has parsed dags/retrain.py and stored it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            api.dag(DAG_ID)
            return
        except AirflowApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


# --- reading a run --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskReport:
    task_id: str
    state: str
    queue: str
    hostname: str
    try_number: int
    xcom: Any  # the task's return value: a stage task's {"stage", "outcome", "seconds", ...}


@dataclass(frozen=True)
class ClusterRun:
    run_id: str
    state: str
    tasks: dict[str, TaskReport]

    def states(self) -> dict[str, str]:
        return {t: r.state for t, r in self.tasks.items()}

    def not_successful(self) -> dict[str, str]:
        return {t: r.state for t, r in self.tasks.items() if r.state != "success"}


def read_run(api: AirflowApi, run_id: str) -> ClusterRun:
    """The run's state and, per task instance, where it ran and what it returned."""
    tasks = {}
    for ti in api.task_instances(DAG_ID, run_id):
        xcom = api.xcom(DAG_ID, run_id, ti["task_id"]) if ti["state"] == "success" else None
        tasks[ti["task_id"]] = TaskReport(
            task_id=ti["task_id"],
            state=ti["state"],
            queue=ti["queue"],
            hostname=ti["hostname"],
            try_number=ti["try_number"],
            xcom=xcom,
        )
    return ClusterRun(run_id, api.run(DAG_ID, run_id)["state"], tasks)


def trigger(running: Cluster, run_id: str, hour: int) -> None:
    running.api.trigger(DAG_ID, run_id, f"{RUN_DATE}T{hour:02d}:00:00Z")


def trigger_and_wait(running: Cluster, run_id: str, hour: int) -> ClusterRun:
    trigger(running, run_id, hour)
    running.api.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT_S)
    return read_run(running.api, run_id)


def stage_tasks(project: Path) -> dict[str, bool]:
    """Airflow task id of each DVC stage -> whether it is a GPU stage."""
    return {t.full_id: t.gpu for t in pipeline_spec(project).stage_tasks}


def served(triton, model: str = "digits") -> tuple[list[int], list[int]]:
    """(stored versions, READY versions) of the model on the test server."""
    from serving.client import ClientSettings, TritonClient
    from serving.repository import TritonRepository

    with TritonClient(ClientSettings.local(triton, retries=1)) as client:
        ready = sorted(
            int(m["version"]) for m in client.repository_index() if m.get("name") == model and m.get("state") == "READY"
        )
    return TritonRepository(triton.repository).versions(model), ready


def tags(project: Path) -> list[str]:
    """The `model-v<N>` tags on the workspace's git remote (where publish pushes), oldest first."""
    remote = Workspace.resolve(project, env={}).git_remote  # the cluster's workers get no RETRAIN_GIT_REMOTE
    listed = subprocess.run(
        ["git", "ls-remote", "--tags", remote, "model-v*"], capture_output=True, text=True, check=True
    ).stdout
    names = {line.split("refs/tags/", 1)[1].removesuffix("^{}") for line in listed.splitlines()}
    return sorted(names, key=lambda name: int(name.removeprefix("model-v")))


def assert_serves(triton, version: int, model: str = "digits") -> None:
    """Triton serves `version`, and it answers the golden samples its push stored beside it (the
    candidate's own rows and outputs, so the served model is the one this run built)."""
    from serving.client import ClientSettings, predict

    golden = json.loads((Path(triton.repository) / model / str(version) / "golden.json").read_text())
    got = predict(
        np.asarray(golden["inputs"], dtype=np.float32),
        model,
        settings=ClientSettings(url=f"127.0.0.1:{triton.http_port}", retries=1),
    )
    np.testing.assert_allclose(got, np.asarray(golden["outputs"]), atol=golden["atol"])


# --- 1. the first run -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def first(running: Cluster) -> ClusterRun:
    return trigger_and_wait(running, "cluster-first", hour=0)


def test_first_run_serves_version_1(first: ClusterRun, project: Path, triton) -> None:
    assert first.state == "success", first.not_successful()
    assert set(first.states().values()) == {"success"}, first.states()
    outcomes = {task: first.tasks[task].xcom["outcome"] for task in stage_tasks(project)}
    assert set(outcomes.values()) == {"ran"}, outcomes
    assert first.tasks["push"].xcom["version"] == 1 and first.tasks["push"].xcom["created"] is True
    assert served(triton) == ([1], [1])
    assert tags(project) == ["model-v1"]
    assert_serves(triton, 1)


def test_gpu_stages_ran_on_the_gpu_worker_and_the_rest_on_the_default_worker(
    first: ClusterRun, project: Path, running: Cluster
) -> None:
    gpu_queue = pipeline_spec(project).airflow.gpu_queue
    gpu = stage_tasks(project)
    assert any(gpu.values()) and not all(gpu.values()), "the DAG should have GPU and CPU stages"
    for task, report in first.tasks.items():
        on_gpu = gpu.get(task, False)  # prepare_workspace, gate, push, publish are CPU tasks
        expected = ("gpu-1", gpu_queue) if on_gpu else ("cpu-1", DEFAULT_QUEUE)
        assert (report.hostname, report.queue) == expected, f"{task} ran on {report.hostname} ({report.queue})"
    roots = {w.name: running.settings.worker_root(w) for w in running.settings.workers}
    assert roots["gpu-1"] != roots["cpu-1"] and all(r.is_dir() for r in roots.values())


def test_each_stage_worked_in_its_own_workers_root(first: ClusterRun, project: Path, running: Cluster) -> None:
    roots = {w.name: running.settings.worker_root(w) for w in running.settings.workers}
    for task in stage_tasks(project):
        report = first.tasks[task]
        # the worker's name for itself (its environment) is the one Airflow recorded (hostname_callable)
        assert report.xcom["host"] == report.hostname
        assert Path(report.xcom["workspace"]).is_relative_to(roots[report.hostname]), (task, report.xcom)
        assert report.xcom["lock"], task
        log = running.api.log(DAG_ID, first.run_id, task, report.try_number)
        assert f"workspace: {report.xcom['workspace']}" in log


# --- 2. unchanged data ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unchanged(first: ClusterRun, running: Cluster) -> ClusterRun:
    return trigger_and_wait(running, "cluster-unchanged", hour=1)


def test_second_run_with_same_data_runs_no_stage_and_pushes_nothing(
    unchanged: ClusterRun, project: Path, triton
) -> None:
    assert unchanged.state == "success", unchanged.not_successful()
    outcomes = {task: unchanged.tasks[task].xcom["outcome"] for task in stage_tasks(project)}
    assert all(outcome in NOT_RAN for outcome in outcomes.values()), outcomes
    assert unchanged.tasks["push"].xcom["created"] is False
    assert unchanged.tasks["publish"].state == "skipped"
    assert served(triton) == ([1], [1])
    assert tags(project) == ["model-v1"]


# --- 3. the GPU worker dies during train ----------------------------------------------------------
def _wait_for_training(api: AirflowApi, run_id: str, timeout_s: float = 600) -> TaskReport:
    """Until `train` runs and has logged its first epoch: the stage command is mid-way, with a
    checkpoint on the worker's disk."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        report = read_run(api, run_id).tasks["train"]
        assert report.state not in ("success", "failed", "upstream_failed"), f"train {report.state} before the kill"
        if report.state == "running" and re.search(r"epoch \d+/", api.log(DAG_ID, run_id, "train", 1)):
            return report
        time.sleep(0.5)
    raise TimeoutError(f"train did not start training within {timeout_s:.0f}s")


def _lost_task_retried(api: AirflowApi, run_id: str, task: str, timeout_s: float = 300) -> str:
    """Wait until the scheduler notices the lost task (no heartbeat) and gives it another try
    (`train` has retries left: `airflow.infra_retries`). Nothing here clears or retries it by hand:
    a task the scheduler fails instead fails this wait. Returns the state it was seen in."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_run(api, run_id).tasks[task].state
        if state == "failed":
            raise AssertionError(f"the scheduler failed {task} when its worker died instead of retrying it")
        if state in ("up_for_retry", "queued", "scheduled") or (state == "running" and _retried(api, run_id, task)):
            return state
        time.sleep(2)
    raise TimeoutError(f"the scheduler did not notice that {task}'s worker died within {timeout_s:.0f}s")


def _retried(api: AirflowApi, run_id: str, task: str) -> bool:
    return len(api.tries(DAG_ID, run_id, task)) > 1


@pytest.fixture(scope="module")
def killed(unchanged: ClusterRun, running: Cluster, project: Path) -> dict[str, Any]:
    # More epochs (and no early stop) retrain the model and keep `train` busy long enough to be
    # killed mid-way; the gate accepts any candidate above the floors, so the new one is served.
    edit_params(
        project,
        train__epochs=30,
        train__early_stopping__patience=30,
        gate__max_regression={"accuracy": 1.0, "f1_macro": 1.0},
    )
    run_id = "cluster-kill-gpu-worker"
    trigger(running, run_id, hour=2)
    training = _wait_for_training(running.api, run_id)
    killed = services.kill_worker(running.settings, training.hostname)
    (port,) = free_ports(1)
    fresh = dataclasses.replace(running.settings.worker("gpu-1"), name="gpu-2", log_port=port)
    settings = running.settings.with_worker(fresh)
    services.start_worker(settings, fresh, services.airflow_env(settings, running.env), fresh=True)
    noticed = _lost_task_retried(running.api, run_id, "train")
    running.api.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT_S)
    return {
        "run": read_run(running.api, run_id),
        "killed_on": training.hostname,
        "killed": killed,
        "noticed": noticed,
        "tries": running.api.tries(DAG_ID, run_id, "train"),
        "fresh_root": settings.worker_root(fresh),
    }


def test_killing_the_gpu_worker_during_train_still_ends_with_a_served_model(
    killed: dict[str, Any], project: Path, triton
) -> None:
    run: ClusterRun = killed["run"]
    assert killed["killed_on"] == "gpu-1" and killed["killed"] > 1
    assert run.state == "success", run.not_successful()
    first_try, *_, last_try = sorted(killed["tries"], key=lambda t: t["try_number"])
    # the lost try ends failed in the history and Airflow itself started the next one (nothing here
    # clears a task by hand: _lost_task_retried fails when the scheduler does not retry), never on gpu-1
    assert first_try["hostname"] == "gpu-1" and first_try["state"] in ("failed", "up_for_retry"), killed["tries"]
    assert last_try["hostname"] == "gpu-2" and last_try["state"] == "success", killed["tries"]
    assert run.tasks["train"].xcom["outcome"] == "ran"
    assert killed["fresh_root"].is_dir()
    # the last try worked in the replacement worker's own root, not in what gpu-1 left behind
    assert Path(run.tasks["train"].xcom["workspace"]).is_relative_to(killed["fresh_root"]), run.tasks["train"].xcom
    assert run.tasks["push"].xcom["created"] is True and run.tasks["push"].xcom["version"] == 2
    assert served(triton) == ([1, 2], [2])
    assert tags(project) == ["model-v1", "model-v2"]
    assert_serves(triton, 2)


# --- 4. a sweep before train ----------------------------------------------------------------------
SWEEP_TASKS = {"sweep.plan", "sweep.trial", "sweep.choose"}
DIVERGES = 1e6  # the training loss is NaN from the first epoch: the trial fails (pipeline/training.py)
CRAWLS = 1e-6  # learns next to nothing: behind the finished trials at the same epoch, so pruned


def _wait_for_dag_tasks(api: AirflowApi, wanted: set[str], timeout_s: float = 300) -> None:
    """Until the dag-processor has parsed the DAG again with `wanted` among its tasks (params.yaml
    changed: the DAG's shape follows it)."""
    deadline = time.monotonic() + timeout_s
    while not wanted <= set(api.task_ids(DAG_ID)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the DAG has no {sorted(wanted)} after {timeout_s:.0f}s: {api.task_ids(DAG_ID)}")
        time.sleep(3)


def mapped(api: AirflowApi, run_id: str, task_id: str) -> list[dict[str, Any]]:
    """The instances of a mapped task, in map-index order, with each one's value (when it succeeded)."""
    found = [ti for ti in api.task_instances(DAG_ID, run_id) if ti["task_id"] == task_id and ti["map_index"] >= 0]
    for ti in found:
        ti["xcom"] = api.xcom(DAG_ID, run_id, task_id, map_index=ti["map_index"]) if ti["state"] == "success" else None
    return sorted(found, key=lambda ti: ti["map_index"])


def most_at_once(intervals: list[tuple[str, str]]) -> int:
    """The most intervals (ISO start, end) that overlap at one moment."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


@pytest.fixture(scope="module")
def swept(killed: dict[str, Any], running: Cluster, project: Path, triton) -> dict[str, Any]:
    """Six trials over the learning rate and the CNN's widths, two at a time (two GPU workers, the
    pool's slots at 2): four as given first (one that diverges, one that crawls), two sampled."""
    lr, channels = "train.optimizer.lr", "train.model.channels"
    edit_params(
        project,
        train__epochs=6,
        train__early_stopping__patience=5,
        gate__max_regression={"accuracy": 1.0, "f1_macro": 1.0},  # any winner above the floors serves
        sweep__enabled=True,
        sweep__sampler="random",
        sweep__trials=6,
        sweep__parallel=2,
        sweep__space={lr: {"low": 0.002, "high": 0.02, "log": True}, channels: {"choices": [[8, 16], [16, 32]]}},
        sweep__enqueue=[
            {lr: 0.003, channels: [16, 32]},
            {lr: 0.01, channels: [8, 16]},
            {lr: DIVERGES, channels: [8, 16]},
            {lr: CRAWLS, channels: [8, 16]},
        ],
        sweep__pruner={"enabled": True, "warmup_epochs": 1, "min_trials": 2, "metric": "val_accuracy"},
    )
    api = running.api
    versions_before = served(triton)[0]
    api.set_pool_slots(pipeline_spec(project).airflow.gpu_pool, 2)
    (port,) = free_ports(1)
    second = dataclasses.replace(running.settings.worker("gpu-1"), name="gpu-3", log_port=port)
    settings = running.settings.with_worker(second)
    services.start_worker(settings, second, services.airflow_env(settings, running.env), fresh=True)
    _wait_for_dag_tasks(api, SWEEP_TASKS)
    run = trigger_and_wait(running, "cluster-sweep", hour=3)
    planned = api.xcom(DAG_ID, run.run_id, "sweep.plan")
    trials = mapped(api, run.run_id, "sweep.trial")
    logs = {t["map_index"]: api.log(DAG_ID, run.run_id, "sweep.trial", t["try_number"], t["map_index"]) for t in trials}
    # A rerun of the sweep alone (same space, same data): the study has every trial already.
    api.clear(DAG_ID, run.run_id, sorted(SWEEP_TASKS), downstream=False)
    deadline = time.monotonic() + 60
    while api.run(DAG_ID, run.run_id)["state"] == "success" and time.monotonic() < deadline:
        time.sleep(1)
    api.wait_for_run(DAG_ID, run.run_id, RUN_TIMEOUT_S)
    return {
        "run": run,
        "versions_before": versions_before,
        "planned": planned,
        "trials": trials,
        "logs": logs,
        "replanned": api.xcom(DAG_ID, run.run_id, "sweep.plan"),
        "rechosen": api.xcom(DAG_ID, run.run_id, "sweep.choose"),
        "after_rerun": read_run(api, run.run_id),
    }


def test_a_sweep_runs_its_trials_two_at_a_time_on_the_gpu_queue_and_the_winner_serves(
    swept: dict[str, Any], project: Path, running: Cluster, triton
) -> None:
    run: ClusterRun = swept["run"]
    assert run.state == "success", run.not_successful()
    planned, trials = swept["planned"], swept["trials"]
    assert len(planned) == 6 and len(trials) == 6
    lr = {t["map_index"]: planned[t["map_index"]]["params"]["train.optimizer.lr"] for t in trials}
    states = {lr[t["map_index"]]: t["state"] for t in trials}
    # the diverging trial failed (its task, not the sweep), the crawling one was pruned (skipped)
    assert states.pop(DIVERGES) == "failed" and states.pop(CRAWLS) == "skipped", states
    # the first two ran together before any trial had finished: nothing to prune them against.
    # The sampled ones finished, or were pruned when behind the median of the finished at an epoch.
    assert states[0.003] == states[0.01] == "success", states
    assert set(states.values()) <= {"success", "skipped"}, states
    failed = next(t for t in trials if lr[t["map_index"]] == DIVERGES)
    assert "diverged" in swept["logs"][failed["map_index"]]
    pruned = next(t for t in trials if lr[t["map_index"]] == CRAWLS)
    assert "pruned" in swept["logs"][pruned["map_index"]]
    # on the GPU queue, each in its own worker's checkout, never more than the pool's 2 slots at once
    gpu_queue = pipeline_spec(project).airflow.gpu_queue
    assert {t["queue"] for t in trials} == {gpu_queue}
    hosts = {t["hostname"] for t in trials}  # the two GPU workers then alive, one trial at a time each
    assert len(hosts) == 2 and all(h.startswith("gpu-") for h in hosts), [t["hostname"] for t in trials]
    assert most_at_once([(t["start_date"], t["end_date"]) for t in trials]) == 2
    for t in trials:
        if t["xcom"]:
            assert f"/sweep-trial-{t['xcom']['number']}" in swept["logs"][t["map_index"]]
    # the winner is the best finished trial, and its params are what train used and publish recorded
    finished = [t["xcom"] for t in trials if t["xcom"]]
    chosen = run.tasks["sweep.choose"].xcom["sweep"]
    assert chosen["value"] == max(t["value"] for t in finished)
    # train ran with the winner's params, or restored the winning trial's run from DVC's run cache
    assert run.tasks["train"].xcom["outcome"] in ("ran", "restored"), run.tasks["train"].xcom
    version = max(swept["versions_before"]) + 1
    assert run.tasks["push"].xcom["version"] == version
    assert served(triton) == ([*swept["versions_before"], version], [version])
    assert tags(project)[-1] == f"model-v{version}"
    assert_serves(triton, version)
    remote = Workspace.resolve(project, env={}).git_remote
    published = yaml.safe_load(
        subprocess.run(
            ["git", "show", f"model-v{version}:params.yaml"], cwd=remote, capture_output=True, text=True, check=True
        ).stdout
    )
    assert published["train"]["optimizer"]["lr"] == chosen["params"]["train.optimizer.lr"]
    assert published["train"]["model"]["channels"] == chosen["params"]["train.model.channels"]


def test_every_trial_is_a_dvc_experiment_listed_in_a_clone(
    swept: dict[str, Any], project: Path, tmp_path: Path
) -> None:
    """What docs/sweeps.md tells a person to run: the experiment refs fetched into a clone of the
    workspace repository, then `dvc exp show` on the run's commit (the trials' baseline)."""
    remote = Workspace.resolve(project, env={}).git_remote
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", remote, str(clone)], check=True)
    subprocess.run(["git", "fetch", "-q", "origin", "refs/exps/*:refs/exps/*"], cwd=clone, check=True)
    baseline = swept["run"].tasks["prepare_workspace"].xcom["commit"]
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--json", "--rev", baseline],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {
        rev["name"]
        for commit in json.loads(shown)
        for experiment in commit.get("experiments") or []
        for rev in experiment.get("revs") or []
        if rev.get("name")
    }
    study = swept["planned"][0]["study"]
    for spec in swept["planned"]:
        assert any(name.startswith(f"{study}-t{spec['number']}") for name in names), (spec, sorted(names))


def test_a_rerun_of_the_sweep_retrains_no_finished_trial(swept: dict[str, Any]) -> None:
    assert swept["after_rerun"].state == "success", swept["after_rerun"].not_successful()
    assert swept["replanned"] == []
    assert swept["rechosen"]["commit"] == swept["run"].tasks["sweep.choose"].xcom["commit"]

"""The retrain DAG's sweep (params `sweep.enabled`): plan, trials, choose (dags/retrain.py declares them).

- **plan** (any worker) opens the study (its storage: `sweep.storage`, `SWEEP_STORAGE_URL` on the
  fleet) for this space and this data (the hashes of train's inputs from the upstream stages' lock
  entries, and the train params the trials start from) and returns the trials still to run: a rerun
  with the same space and data retrains nothing finished.
- **trial** (mapped, one per planned trial, on the GPU queue and pool) checks the run out like the
  train stage's task would, pulls train's inputs and runs the trial as a DVC experiment
  (`orchestration.sweep.trial`). A failed trial fails its task and a pruned one is skipped: neither
  fails the sweep.
- **choose** (whatever the trials did) takes the best finished trial, writes its params into
  params.yaml of the run's commit and pushes that commit to `refs/retrain/runs/<run>.sweep`; its value
  is the run's `PreparedRun` from then on (`tasks.prepared_run`): train, crossval, export, the gate,
  the push and publish build from the winner's params, so the published `model-vN` records them.
  It fails only when no trial finished.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestration import dvc_runner, lockfile, steps, workspace
from orchestration.run_values import PreparedRun
from orchestration.tasks import PREPARE_TASK, failing_fast, fleet, prepared_run, project_params, results

log = logging.getLogger(__name__)

STAGE = "train"  # the stage a trial runs, with the trial's params
PLAN_TASK = "sweep.plan"
STUDY_KEY = "study"  # plan's second XCom: the study's name, also when nothing is left to run
SWEEP_REF_SUFFIX = ".sweep"


# --- without Airflow ---------------------------------------------------------------------------
def data_key(
    graph: Any, upstream: Sequence[Mapping[str, Any]], train: Mapping[str, Any], swept: Iterable[str] = ()
) -> str:
    """What a trial's result depends on besides its own values (`orchestration.sweep.study.key_of`):
    the hashes of the train stage's inputs, from the upstream stages' lock entries here, and the
    train params the trials start from."""
    from orchestration.sweep.study import key_of

    entries = lockfile.latest_entries(upstream)
    paths, _ = steps.inputs(graph, STAGE)
    hashes = {
        str(out["path"]): out.get("md5") or out.get("etag")
        for entry in entries.values()
        for out in entry.get("outs") or []
        if str(out["path"]) in paths
    }
    missing = sorted(set(paths) - set(hashes))
    if missing:
        raise lockfile.LockMergeError(
            f"the sweep needs the lock entries that write {missing}; no upstream result has them"
        )
    return key_of(hashes, train, swept)


def trial_checkout(
    setup: steps.Fleet, run_id: str, prepared: PreparedRun, upstream: Sequence[Mapping[str, Any]], folder: str
) -> Path:
    """A checkout for one trial: what the train stage's task would have, train's inputs in place,
    and DVC's cache set to this worker's (the experiment's outputs land where its stages' do)."""
    from dvc.config import Config

    root, _, _ = steps.stage_checkout(setup, run_id, prepared, STAGE, upstream, folder)
    paths, _ = steps.inputs(setup.graph, STAGE)
    dvc_runner.pull_outputs(root, paths, setup.dvc)
    with Config(str(root / ".dvc"), validate=False).edit("local") as conf:
        conf["cache"]["dir"] = str(setup.dvc.cache_dir)
    return root


def commit_winner(
    setup: steps.Fleet, run_id: str, prepared: PreparedRun, winner: Mapping[str, Any], folder: str
) -> PreparedRun:
    """The run's commit with the winner's params in params.yaml, on `<run ref>.sweep`: the same
    parent (the published version), so publish pushes it as a fast-forward like any run commit.
    Stage tasks still working on the run's own ref are not disturbed."""
    from orchestration.sweep.winner import write_winner

    ws = setup.ws
    root = workspace.checkout(ws, workspace.safe_run_key(run_id), folder, prepared.ref, prepared.commit, depth=2)
    write_winner(root / "params.yaml", winner["params"])
    env = ws.git_env()
    message = (
        f"sweep: trial {winner['number']} of study {winner['study']} won "
        f"({winner.get('objective', 'objective')} = {winner['value']}); its params: "
        + ", ".join(f"{k}={v}" for k, v in winner["params"].items())
    )
    workspace.run(["git", "add", "params.yaml"], root, env=env)
    previous = workspace.run(["git", "log", "-1", "--format=%B"], root).strip()
    # the run commit's own dates: choosing the same winner again gives the same commit (a rerun is a no-op)
    author_date, commit_date = workspace.run(["git", "log", "-1", "--format=%aI%n%cI"], root).split()
    env = {**env, "GIT_AUTHOR_DATE": author_date, "GIT_COMMITTER_DATE": commit_date}
    workspace.run(["git", "commit", "-q", "--amend", "--allow-empty", "-m", f"{previous}\n\n{message}"], root, env=env)
    commit = workspace.run(["git", "rev-parse", "HEAD"], root).strip()
    ref = prepared.ref + SWEEP_REF_SUFFIX
    workspace.run(["git", "push", "-q", "--force", ws.git_remote, f"{commit}:{ref}"], root, env=env)
    log.info("the winner's params are in commit %s on %s", commit[:12], ref)
    return dataclasses.replace(prepared, commit=commit, ref=ref, sweep=dict(winner))


# --- the tasks ----------------------------------------------------------------------------------
def _storage(project: str | Path, params: Any) -> str:
    from orchestration.sweep.study import storage_url

    return storage_url(params.sweep, Path(project))


def plan(project: str | Path, ancestors: Sequence[str], context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The trials to run now (XCom: the list the trial task is mapped over), and the study's name
    (XCom key `study`)."""
    from orchestration.sweep.study import plan as plan_trials

    params = project_params(project)
    setup = fleet(project, params)
    train = params.train.model_dump(mode="json")
    key = failing_fast(lambda: data_key(setup.graph, results(context, ancestors), train, params.sweep.space))
    specs = plan_trials(params.sweep, _storage(project, params), key)
    study = specs[0]["study"] if specs else _study_name(params.sweep, key)
    context["ti"].xcom_push(key=STUDY_KEY, value=study)
    log.info("study %s: %d trial(s) to run now, %d in all", study, len(specs), params.sweep.trials)
    for spec in specs:
        log.info("trial %d: %s", spec["number"], spec["params"])
    return [dict(spec) for spec in specs]  # plain dicts: what XCom carries


def _study_name(sweep: Any, key: str) -> str:
    from orchestration.sweep.study import study_name

    return study_name(sweep, key)


def trial(
    project: str | Path, spec: Mapping[str, Any], ancestors: Sequence[str], context: Mapping[str, Any]
) -> dict[str, Any]:
    """One trial as a DVC experiment in a checkout of this worker, pushed to the workspace's git
    remote. Failed: the task fails (no retry: the same params would fail again). Pruned: skipped."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from orchestration.sweep.study import TrialSpec
    from orchestration.sweep.trial import run_trial

    ti = context["ti"]
    params = project_params(project)
    setup = fleet(project, params)
    folder = steps.task_folder(f"sweep-trial-{spec['number']}", ti.try_number)
    root = failing_fast(
        lambda: trial_checkout(setup, context["run_id"], prepared_run(ti), results(context, ancestors), folder)
    )
    log.info("trial %d of study %s: %s", spec["number"], spec["study"], spec["params"])
    result = run_trial(
        root,
        TrialSpec(study=spec["study"], number=spec["number"], params=spec["params"]),
        params.sweep,
        _storage(project, params),
        git_remote=setup.ws.git_remote,
    )
    if result["state"] == "failed":
        # in the task's log as well as its exception: the log is what the UI shows first
        log.error("trial %d failed (the sweep goes on): %s", spec["number"], result.get("error"))
        raise AirflowFailException(f"trial {spec['number']} failed (the sweep goes on): {result.get('error')}")
    if result["state"] == "pruned":
        why = (
            f"trial {spec['number']} was pruned: its {params.sweep.pruner.metric} fell behind the other trials' "
            f"at the same epoch (experiment {result.get('experiment')})"
        )
        log.info("%s", why)
        raise AirflowSkipException(why)
    log.info("trial %d: %s = %s", spec["number"], params.sweep.objective.metric, result.get("value"))
    return result


def choose(project: str | Path, context: Mapping[str, Any]) -> dict[str, Any]:
    """The best finished trial's params into the run's commit; its value is the run's PreparedRun."""
    from airflow.sdk.exceptions import AirflowFailException

    from orchestration.sweep.winner import SweepFailed, best

    ti = context["ti"]
    study = ti.xcom_pull(task_ids=PLAN_TASK, key=STUDY_KEY)
    if study is None:
        raise AirflowFailException("the sweep's plan did not finish (see sweep.plan's log); no trial was chosen")
    params = project_params(project)
    try:
        winner = best(params.sweep, _storage(project, params), study)
    except SweepFailed as error:
        raise AirflowFailException(str(error)) from error
    winner = {**winner, "study": study, "objective": params.sweep.objective.metric}
    log.info("trial %s won: %s = %s with %s", winner["number"], winner["objective"], winner["value"], winner["params"])
    setup = fleet(project, params)
    prepared = PreparedRun.from_xcom(ti.xcom_pull(task_ids=PREPARE_TASK))
    folder = steps.task_folder("sweep-choose", ti.try_number)
    chosen = failing_fast(lambda: commit_winner(setup, context["run_id"], prepared, winner, folder))
    return chosen.to_xcom()

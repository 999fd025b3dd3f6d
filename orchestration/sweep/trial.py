"""One trial: train with the trial's values as a DVC experiment, report each epoch to Optuna, stop
the training when the pruner says its curve is behind, and tell Optuna how it ended.

It runs in a DVC repository checkout whose train inputs are in place (the stages before train
recorded in dvc.lock, their outputs checked out), never in a person's working copy: it edits
params.yaml and leaves the experiment's outputs there.

- complete: `dvc exp run --name <study>-t<number> train` made the experiment; its objective is
  the `sweep.objective.metric` key of the train stage's DVCLive summary (metrics.json).
- pruned / failed: the training was stopped (or failed); the workspace, with what metrics it
  logged, is saved as the experiment `<study>-t<number>-pruned` / `-failed` (`dvc exp save`), so
  `dvc exp show` lists every trial with its params and state. A failure is returned, not raised.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from orchestration.dvc_graph import read_graph
from orchestration.sweep import space
from orchestration.sweep.experiments import STAGE, push_experiment, save_unfinished
from orchestration.sweep.params import SweepParams
from orchestration.sweep.study import TrialSpec, open_study
from orchestration.workspace import dvc_command, tool_env
from pipeline import atomic

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often the per-epoch values are read while training runs
STOP_GRACE_S = 20.0  # after SIGTERM, how long the training may take to exit before SIGKILL
ERROR_LINES = 30  # lines of the stage's output kept as a failed trial's error


def experiment_name(spec: TrialSpec) -> str:
    return f"{spec['study']}-t{spec['number']}"


def live_dir(root: Path) -> Path:
    """The train stage's DVCLive folder, as dvc.yaml passes it to the stage (`--live`)."""
    return root / read_graph(root).stages[STAGE].cli_args()["live"]


def curve_path(root: Path, metric: str) -> Path:
    """DVCLive's per-epoch values of `metric`: <live>/plots/metrics/<metric>.tsv."""
    return live_dir(root) / "plots" / "metrics" / f"{metric}.tsv"


def read_curve(path: Path) -> list[tuple[int, float]]:
    """(step, value) rows written so far; a line still being written is left for the next read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    complete = text[: text.rfind("\n") + 1]
    rows = csv.DictReader(complete.splitlines(), delimiter="\t")
    name = path.stem
    return [(int(row["step"]), float(row[name])) for row in rows if row.get(name)]


def objective_value(summary: Mapping[str, Any], metric: str) -> float:
    """The objective from the DVCLive summary; `best/val_accuracy` is summary["best"]["val_accuracy"]."""
    node: Any = summary
    for part in metric.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"the train metrics have no {metric!r} (sweep.objective.metric); keys: {sorted(summary)}")
        node = node[part]
    return float(node)


def _frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not found:
        raise ValueError(f"study {study.study_name} has no trial {number}: plan the sweep first")
    return found[0]


def _live_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> optuna.Trial:
    """The planned trial as a Trial that can report and be asked to prune (Optuna has no public
    lookup by number across processes: the frozen trial carries its storage id)."""
    return optuna.Trial(study, frozen._trial_id)


def _told(spec: TrialSpec, frozen: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """What an earlier try of this trial told the study (a retried task): nothing is trained again."""
    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(frozen.state, "failed")
    name = experiment_name(spec)
    return {
        "study": spec["study"],
        "number": spec["number"],
        "state": state,
        "value": frozen.value if state == "complete" else None,
        "experiment": name if state == "complete" else f"{name}-{state}",
        "params": spec["params"],
        "error": None if state != "failed" else f"{name}: an earlier try of this trial failed ({frozen.state.name})",
    }


def _stop(process: subprocess.Popen) -> None:
    """Stop the training and everything it started (dvc, the stage's python, torchrun)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def _output_file() -> Iterator[Any]:
    with tempfile.TemporaryFile("w+") as out:
        yield out


def _tail(out: Any) -> str:
    out.seek(0)
    lines = out.read().splitlines()
    return "\n".join(lines[-ERROR_LINES:])


def _ran_stage(out: Any) -> bool:
    out.flush()
    out.seek(0)
    return f"Running stage '{STAGE}'" in out.read()


def _train(root: Path, name: str, trial: optuna.Trial, curve: Path, env: Mapping[str, str]) -> tuple[str, str]:
    """Run the experiment, reporting each epoch; ("complete" | "pruned" | "failed", output tail)."""
    with _output_file() as out:
        process = subprocess.Popen(
            dvc_command("exp", "run", "--name", name, STAGE),
            cwd=root,
            env=tool_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a prune stops all of it
        )
        reported, started = -1, False
        try:
            while True:
                running = process.poll() is None
                # `exp run` first checks the last run's outputs out (its curve too), then removes them
                # and runs the stage: only values written after DVC says it runs the stage are this
                # trial's. A run restored from DVC's run cache is read whole once it is done.
                started = started or _ran_stage(out)
                for step, value in read_curve(curve) if started or not running else []:
                    if step > reported:
                        trial.report(value, step)
                        reported = step
                        if running and trial.should_prune():
                            log.info("%s: pruned at epoch %d (%s %.4f)", name, step + 1, curve.stem, value)
                            _stop(process)
                            return "pruned", _tail(out)
                if not running:
                    break
                time.sleep(POLL_S)
        except BaseException:
            _stop(process)
            raise
        return ("complete" if process.returncode == 0 else "failed"), _tail(out)


def run_trial(
    root: Path,
    spec: TrialSpec,
    sweep: SweepParams,
    storage: str,
    git_remote: str | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run one planned trial in the checkout `root` (see the module's doc); returns
    {study, number, state: complete|pruned|failed, value, experiment, params, error}."""
    root = Path(root)
    env = os.environ if env is None else env
    name = experiment_name(spec)
    study = open_study(sweep, storage, spec["study"])
    frozen = _frozen(study, spec["number"])
    if frozen.state.is_finished():
        log.info("trial %s was already %s: not run again", name, frozen.state.name.lower())
        return _told(spec, frozen)
    params_path = root / "params.yaml"
    atomic.write_text(params_path, space.apply(params_path.read_text(), spec["params"]))
    curve, summary = curve_path(root, sweep.pruner.metric), live_dir(root) / "metrics.json"
    for stale in (curve, summary):  # a checkout used before: only this run's values count
        stale.unlink(missing_ok=True)

    trial = _live_trial(study, frozen)
    log.info("trial %s started: %s", name, json.dumps(spec["params"]))
    state, output = _train(root, name, trial, curve, env)
    value: float | None = None
    error: str | None = None
    if state == "complete":
        try:
            value = objective_value(json.loads(summary.read_text()), sweep.objective.metric)
        except (OSError, ValueError, KeyError) as problem:
            state, error = "failed", f"{name}: no objective value: {problem}"
    elif state == "failed":
        error = f"{name}: `dvc exp run {STAGE}` failed:\n{output}"

    if state == "complete":
        study.tell(spec["number"], value)
        experiment = name
    else:
        study.tell(spec["number"], state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL)
        experiment = f"{name}-{state}"
        save_unfinished(root, experiment, summary, env)
    if git_remote:
        push_experiment(root, git_remote, experiment, env)
    log.info("trial %s ended: %s%s", name, state, "" if value is None else f", {sweep.objective.metric} {value:.4f}")
    return {
        "study": spec["study"],
        "number": spec["number"],
        "state": state,
        "value": value,
        "experiment": experiment,
        "params": spec["params"],
        "error": error,
    }

"""The sweep's Optuna study: its name, where it lives, and which trials to run now.

The study is keyed by what its trials' results depend on: the space, the sampler, its seed, the
objective and the train inputs' hashes (`data_key`). The same sweep over the same data is the same
study, so a rerun finds its finished trials there and retrains none of them; new data or another
space starts a new study.

Its storage is an Optuna RDB database: a SQLite file in the project locally, the fleet's Postgres
through `sweep.storage` or SWEEP_STORAGE_URL, so that trials on other workers (and a rerun after a
worker died) see the same study.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypedDict

import optuna
from optuna.trial import TrialState

from orchestration import lockfile
from orchestration.dvc_graph import read_graph
from orchestration.sweep import space
from orchestration.sweep.params import SweepParams
from pipeline.errors import StageError

log = logging.getLogger(__name__)

STORAGE_ENV = "SWEEP_STORAGE_URL"  # overrides sweep.storage
LOCAL_DB = Path(".sweep") / "optuna.db"  # the study's SQLite file in the project when sweep.storage is null
RETRY_OF = "retry_of"  # user attr of a trial re-run for one a dead worker left RUNNING: its number
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours to write


class TrialSpec(TypedDict):
    """One trial to run, as plain JSON (it travels in XCom): the study, the trial's number in it and
    its values (dotted train.* keys -> params.yaml values)."""

    study: str
    number: int
    params: dict[str, Any]


class SweepError(StageError):
    """The sweep cannot start: no train inputs to key the study by, or no storage."""


def study_name(sweep: SweepParams, data_key: str) -> str:
    """`sweep-<10 hex digits>`, a hash of what the trials' results depend on."""
    keyed = {
        "space": {key: dim.model_dump(mode="json") for key, dim in sorted(sweep.space.items())},
        "sampler": sweep.sampler,
        "seed": sweep.seed,
        "objective": sweep.objective.model_dump(mode="json"),
        "data": data_key,
    }
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
    return f"sweep-{digest[:10]}"


def storage_url(sweep: SweepParams, project: str | Path, env: Mapping[str, str] | None = None) -> str:
    """SWEEP_STORAGE_URL, else `sweep.storage`, else a SQLite file under the project."""
    env = os.environ if env is None else env
    url = env.get(STORAGE_ENV) or sweep.storage
    if url:
        return url
    path = Path(project).resolve() / LOCAL_DB
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def train_inputs(root: str | Path) -> list[str]:
    """What train reads that the stages before it write (data/clean.parquet, data/split.parquet)."""
    graph = read_graph(root)
    upstream = {out for name in graph.ancestors("train") for out in graph.stages[name].outs}
    return [dep for dep in graph.stages["train"].deps if dep in upstream]


def key_of(inputs: Mapping[str, Any], train: Mapping[str, Any], swept: Iterable[str] = ()) -> str:
    """What a trial's result depends on besides its own values: train's input data (path -> hash)
    and the `train:` params the trials start from, less the `swept` keys (`train.optimizer.lr`),
    which each trial sets (so writing the winner into params.yaml keeps the study's key)."""
    kept = json.loads(json.dumps(dict(train), default=str))
    for key in swept:
        *parents, leaf = key.removeprefix("train.").split(".")
        node = kept
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    text = json.dumps({"inputs": dict(inputs), "train": kept}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_key(root: str | Path) -> str:
    """`key_of` the checkout `root`: train's inputs with their hashes from dvc.lock, and the train
    params of its params.yaml."""
    root = Path(root)
    lock = lockfile.read(root)
    hashes = {out["path"]: out.get("md5") for entry in lock.values() for out in entry.get("outs", []) if "path" in out}
    inputs = train_inputs(root)
    missing = [dep for dep in inputs if not hashes.get(dep)]
    if missing or not inputs:
        raise SweepError(
            f"{root / 'dvc.lock'} records no hash of train's inputs {missing or inputs}: "
            "run `dvc repro split` (and commit dvc.lock) before a sweep"
        )
    from pipeline.params import load_params

    params = load_params(root / "params.yaml")
    swept = (params.sweep.get("space") or {}).keys()  # the sweep section, raw (its owner checks it)
    return key_of({dep: hashes[dep] for dep in inputs}, params.train.model_dump(mode="json"), swept)


def storage(url: str) -> optuna.storages.RDBStorage:
    """The RDB storage; SQLite waits for a writer instead of failing at once when trials report
    at the same time."""
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _sampler(sweep: SweepParams, seed: int) -> optuna.samplers.BaseSampler:
    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid_space(sweep), seed=seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Several trials are asked before any is told: the liar makes TPE spread them out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner(sweep: SweepParams) -> optuna.pruners.BasePruner:
    if not sweep.pruner.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=sweep.pruner.min_trials, n_warmup_steps=sweep.pruner.warmup_epochs
    )


def open_study(sweep: SweepParams, url: str, name: str, seed_offset: int | None = None) -> optuna.Study:
    """Create the study or load it. With `seed_offset` (the trials already in the study) it asks
    with the sweep's sampler, its seed moved on by that much: a sampler made again in another
    process would otherwise draw the same values again. Without, it only reports and tells, through
    a plain random sampler (the grid sampler's end-of-grid hook may only run inside `optimize`)."""
    sampler = (
        optuna.samplers.RandomSampler(seed=sweep.seed)
        if seed_offset is None
        else _sampler(sweep, sweep.seed + seed_offset)
    )
    return optuna.create_study(
        study_name=name,
        storage=storage(url),
        sampler=sampler,
        pruner=_pruner(sweep),
        direction=sweep.objective.direction,
        load_if_exists=True,
    )


def target_trials(sweep: SweepParams) -> int:
    """How many trials the study should hold: `trials`, or the grid's size when that is smaller."""
    return min(sweep.trials, space.grid_size(sweep)) if sweep.sampler == "grid" else sweep.trials


def counted(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Trials that count towards `trials`: all but those a retry replaced."""
    replaced = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    return sum(t.number not in replaced for t in trials)


def plan(sweep: SweepParams, storage: str, data_key: str) -> list[TrialSpec]:
    """The trials to run now. Finished ones (complete, pruned, failed) are never returned again.
    A trial still RUNNING was left by a worker that died (plan runs while no trial of the sweep
    does): it is marked failed and its values are run again as a new trial. Then new trials are
    asked until the study holds `trials` (retried ones not counted)."""
    name = study_name(sweep, data_key)
    results = open_study(sweep, storage, name)
    existing = results.get_trials(deepcopy=False)
    for dead in (t for t in existing if t.state == TrialState.RUNNING):
        log.warning(
            "trial %d of %s was left running (its worker died): failed, its values run again", dead.number, name
        )
        results.tell(dead.number, state=TrialState.FAIL)
        results.enqueue_trial(dict(dead.params), user_attrs={RETRY_OF: dead.number}, skip_if_exists=False)
    study = open_study(sweep, storage, name, seed_offset=len(existing))
    if not existing:  # a new study: the trials params name run first
        for values in sweep.enqueue:
            study.enqueue_trial({key: space.encode(value) for key, value in values.items()})
    dists = space.distributions(sweep)
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    asks = max(target_trials(sweep) - counted(study.get_trials(deepcopy=False)), 0) + waiting
    specs: list[TrialSpec] = []
    for _ in range(asks):
        trial = study.ask(dists)  # a waiting (enqueued) trial first, then the sampler's
        specs.append({"study": name, "number": trial.number, "params": space.decode_params(sweep, trial.params)})
    log.info("study %s: %d trial(s) to run, %d in the study", name, len(specs), len(study.trials))
    return specs

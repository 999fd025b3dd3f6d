"""Run one DVC stage in a worker-local checkout, the way each Airflow stage task does, through
DVC's Python API (`dvc.repo.Repo`) in the task's process.

1. check out the stage's inputs (the outputs of upstream stages it depends on) from the worker's
   DVC cache, or pull them from the DVC remote when the cache lacks them;
2. ask DVC whether the stage is up to date (`Repo.status`, what `dvc status --json` prints): with
   the same deps, params and command as the lock the run started from, and its outputs on the
   remote, it is **unchanged** and nothing runs or moves;
3. otherwise reproduce it (`Repo.reproduce(single_item=True, pull=True)`): DVC restores it from
   its run cache when any worker already ran the stage on these inputs (**restored**), else runs
   its command (**ran**). Which of the two happens is read from the run cache before the stage
   (the remote's entries for this stage on these inputs, pulled), not from DVC's log text;
4. push the outputs, then the stage's run cache entry, to the remote, so that the next task, on any
   worker, continues from there (data before the entry that points at it);
5. return the stage's `dvc.lock` entry.

The checkout gets the worker's shared DVC cache and the remote as in-memory config (secrets never
touch a file). DVC's own INFO chatter (including its "To track the changes with git, run: ..." hint,
moot in a checkout that is thrown away) stays out of the task log; the log says what the stage did.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from orchestration import lockfile
from orchestration.remote import NAME, SECRET_KEYS, DvcRemote, RemoteError, explain
from orchestration.workspace import tool_env
from pipeline.errors import StageError

log = logging.getLogger(__name__)
T = TypeVar("T")

MISSING_OUT = ("deleted", "not in cache")  # an output that is only absent here, not changed


class StageFailed(StageError):
    """The stage's command (or DVC checking its outputs) failed."""


@dataclass(frozen=True)
class DvcSettings:
    cache_dir: Path  # the worker's DVC cache, shared by its checkouts
    remote: DvcRemote | None  # None = the repository's own default remote

    def config(self, root: Path) -> dict[str, Any]:
        config: dict[str, Any] = {
            # autostage: DVC stages dvc.lock itself instead of printing how to (the checkout is scratch)
            "core": {"autostage": True, "analytics": False, "site_cache_dir": str(root / ".dvc" / "tmp" / "site")},
            "cache": {"dir": str(self.cache_dir)},
        }
        if self.remote is not None:
            remote = self.remote.dvc_config()
            config["core"].update(remote["core"])
            config["remote"] = remote["remote"]
        return config


@contextlib.contextmanager
def quiet_dvc() -> Iterator[None]:
    """DVC's warnings and errors reach our log; its INFO lines and own console handlers do not."""
    logger = logging.getLogger("dvc")
    handlers, level = list(logger.handlers), logger.level
    logger.handlers.clear()
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)


@contextlib.contextmanager
def open_repo(root: Path, settings: DvcSettings) -> Iterator[Any]:
    from dvc.repo import Repo

    # DVC resolves targets and dep paths against the current directory.
    with contextlib.chdir(root), quiet_dvc(), Repo(str(root), config=settings.config(root)) as repo:
        yield repo


def on_remote(settings: DvcSettings, what: str, call: Callable[[], T]) -> T:
    """Run `call` (a transfer); any failure becomes a RemoteError naming the remote and the cause."""
    try:
        return call()
    except Exception as error:  # a transfer fails in many library-specific ways; all mean the same here
        raise RemoteError(f"{what} failed: {explain(settings.remote, error)}") from error


def check_remote(repo: Any, settings: DvcSettings) -> None:
    """Fail early, and clearly, when the remote cannot be reached or refuses our credentials."""

    def probe() -> None:
        remote = repo.cloud.get_remote()
        exists = remote.fs.exists(remote.path)
        if settings.remote is not None and settings.remote.is_local and not exists:
            remote.fs.makedirs(remote.path)  # a local remote is a folder DVC would create on first push

    on_remote(settings, "reaching the DVC remote", probe)


def check_remote_at(root: Path, settings: DvcSettings) -> None:
    with open_repo(root, settings) as repo:
        check_remote(repo, settings)


def record_remote(root: Path, settings: DvcSettings) -> bool:
    """Name the remote (URL, endpoint, region: never credentials) as the default in the checkout's
    committed `.dvc/config`, so that `git checkout <tag> && dvc pull` works in any clone that has
    credentials. Returns whether the file changed."""
    if settings.remote is None:
        return False
    from dvc.config import Config

    wanted = {k: v for k, v in settings.remote.dvc_config()["remote"][NAME].items() if k not in SECRET_KEYS}
    config = Config(str(root / ".dvc"), validate=False)
    current = config.load_one("repo")
    if current.get("core", {}).get("remote") == NAME and dict(current.get("remote", {}).get(NAME, {})) == wanted:
        return False
    with config.edit("repo") as conf:
        conf["core"]["remote"] = NAME
        conf["remote"][NAME] = wanted
    return True


def changes(status: dict[str, Any], stage: str, absent_inputs: Collection[str] = ()) -> list[str]:
    """What `dvc status` reports for `stage` besides outputs that are merely absent here (and
    deps in `absent_inputs`: inputs known to be what the lock says, left on the remote)."""
    found = []
    for item in status.get(stage, []):
        if isinstance(item, str):  # "changed command", "always changed"
            found.append(item)
            continue
        for kind, paths in item.items():
            for path, state in paths.items():
                if kind == "changed outs" and state in MISSING_OUT:
                    continue
                if kind == "changed deps" and state == "deleted" and path in absent_inputs:
                    continue
                if isinstance(state, dict):  # params: {"params.yaml": {"train.epochs": "modified"}}
                    found.extend(f"param {key} {value}" for key, value in state.items())
                else:
                    found.append(f"{kind.removeprefix('changed ').rstrip('s')} {path} {state}")
    return found


def run_cache_target(repo: Any, stage: str) -> tuple[Any, str] | None:
    """`stage` with its deps hashed, and its run-cache key (what DVC files its runs under:
    `runs/<key[:2]>/<key>/`); None when DVC never caches its runs (e.g. a `persist` output)."""
    from dvc.stage.cache import _can_hash, _get_stage_hash

    (target,) = repo.stage.collect(stage)
    if not _can_hash(target):
        return None
    target.save_deps()
    return target, _get_stage_hash(target)


def run_cache_has(repo: Any, target: Any) -> bool:
    """Whether DVC's run cache holds a run of `target` (from run_cache_target) on its current
    inputs, i.e. whether `reproduce` will restore it rather than run it (DVC's own test)."""
    return repo.stage_cache._load(target) is not None


def copy_run_cache_entries(from_odb: Any, to_odb: Any, key: str) -> int:
    """Copy the run-cache entries of one stage key that `to_odb` lacks (DVC's own transfer copies
    every entry of every stage, each time). An entry's name is the hash of its content, so one
    present under its name is the same entry. Returns how many were copied."""
    from dvc_objects.fs.generic import copy

    src_fs, dst_fs = from_odb.fs, to_odb.fs
    src_dir = src_fs.join(from_odb.path, "runs", key[:2], key)
    dst_dir = dst_fs.join(to_odb.path, "runs", key[:2], key)
    if not src_fs.exists(src_dir):
        return 0
    copied = 0
    for src in src_fs.find(src_dir):
        dst = dst_fs.join(dst_dir, src_fs.name(src))
        if not dst_fs.exists(dst):
            copy(src_fs, src, dst_fs, dst)
            copied += 1
    return copied


def remote_run_cache(repo: Any) -> Any:
    return repo.cloud.get_remote_odb(None, "run cache", hash_name="md5-dos2unix")


@contextlib.contextmanager
def own_run_cache_only(repo: Any) -> Iterator[None]:
    """`reproduce(pull=True)` first copies the remote's whole run cache (every run of every stage,
    each time); the stage's own entries are here already (copy_run_cache_entries), so skip it."""
    stage_cache = repo.stage_cache
    stage_cache.pull = lambda *args, **kwargs: []
    try:
        yield
    finally:
        del stage_cache.pull


def checkout_from_cache(repo: Any, paths: Sequence[str]) -> bool:
    """Check `paths` (outputs in the checkout's dvc.lock) out of this worker's DVC cache; False
    when the cache lacks any of them (then they come from the remote). On one machine the cache
    holds every upstream output already, and asking the remote about each would be wasted."""
    from dvc.exceptions import CheckoutError

    try:
        repo.checkout(targets=list(paths))
    except CheckoutError:
        return False
    return True


def read_entry(root: Path, stage: str) -> dict[str, Any]:
    entry = lockfile.read(root).get(stage)
    if entry is None:
        raise StageFailed(f"stage {stage}: DVC wrote no dvc.lock entry for it")
    return entry


def run_stage(
    root: Path,
    stage: str,
    inputs: Sequence[str],
    settings: DvcSettings,
    input_deps: Collection[str] = (),
    inputs_as_locked: bool = False,
) -> dict[str, Any]:
    """Bring `stage` up to date in the checkout `root`. `inputs` are the DVC-tracked paths it
    reads (outputs of upstream stages), `input_deps` its deps that cover them. With
    `inputs_as_locked` (every upstream entry equals the one the run started from, so the inputs
    are exactly what the stage's own entry recorded), they are pulled only if the stage turns out
    to have changed for another reason. Returns outcome, timings and its dvc.lock entry."""
    started = time.monotonic()
    timings = {"pull_s": 0.0, "stage_s": 0.0, "push_s": 0.0}
    with open_repo(root, settings) as repo:

        def pull_inputs() -> None:
            tick = time.monotonic()
            if not checkout_from_cache(repo, inputs):
                what = f"pulling the inputs of {stage} ({', '.join(inputs)})"
                on_remote(settings, what, lambda: repo.pull(targets=list(inputs)))
            timings["pull_s"] = time.monotonic() - tick

        # (prepare checked that the remote answers; every transfer below names it if it fails)
        pulled = bool(inputs) and not inputs_as_locked
        if pulled:
            pull_inputs()
        found = changes(repo.status(targets=[stage]), stage, () if pulled else input_deps)
        if found and stage not in lockfile.read(root):
            # DVC calls every dep "modified" when nothing was recorded: say what is true instead
            found = ["not run before: dvc.lock has no entry for it yet"]
        absent: list[str] = []
        # With inputs and entry as published, publish already checked that the remote holds its outputs.
        if not found and not inputs_as_locked:
            cloud = on_remote(
                settings, f"checking the outputs of {stage}", lambda: repo.status(targets=[stage], cloud=True)
            )
            absent = sorted(path for path, state in cloud.items() if state == "missing")
        if not found and not absent:
            outcome = "unchanged"
            log.info("stage %s was up to date: nothing ran (%.1fs)", stage, time.monotonic() - started)
        else:
            why = "; ".join(found) if found else f"its outputs are missing from the remote: {', '.join(absent)}"
            log.info("stage %s changed (%s)", stage, why)
            if inputs and not pulled:
                pull_inputs()
            tick = time.monotonic()
            cached = run_cache_target(repo, stage)
            if cached and (settings.remote is not None or repo.config["core"].get("remote")):
                on_remote(
                    settings,
                    "pulling DVC's run cache",
                    lambda: copy_run_cache_entries(remote_run_cache(repo), repo.cache.legacy, cached[1]),
                )
            restorable = cached is not None and run_cache_has(repo, cached[0])
            try:
                # run_env: the stage commands say `python -m stages...`; this interpreter's bin first
                with own_run_cache_only(repo):
                    repo.reproduce(
                        stage, single_item=True, pull=True, allow_missing=True, run_env={"PATH": tool_env()["PATH"]}
                    )
            except Exception as error:
                from dvc.exceptions import ReproductionError

                if isinstance(error, ReproductionError):
                    cause = error.__cause__ or error
                    raise StageFailed(f"stage {stage} failed: {cause} (its output is above)") from error
                raise
            timings["stage_s"] = time.monotonic() - tick
            left = changes(repo.status(targets=[stage]), stage)
            if left:
                raise StageFailed(f"stage {stage}: DVC still reports changes after reproducing it: {'; '.join(left)}")
            outcome = "restored" if restorable else "ran"
            tick = time.monotonic()
            on_remote(settings, f"pushing the outputs of {stage}", lambda: repo.push(targets=[stage]))
            if cached:
                on_remote(
                    settings,
                    "pushing DVC's run cache",
                    lambda: copy_run_cache_entries(repo.cache.legacy, remote_run_cache(repo), cached[1]),
                )
            timings["push_s"] = time.monotonic() - tick
            transfers = f"pulled inputs in {timings['pull_s']:.1f}s, pushed outputs in {timings['push_s']:.1f}s"
            if outcome == "restored":
                log.info("stage %s restored from DVC's run cache: nothing ran (%s)", stage, transfers)
            else:
                log.info("stage %s ran in %.1fs (%s)", stage, timings["stage_s"], transfers)
    entry = read_entry(root, stage)
    return {
        "stage": stage,
        "outcome": outcome,
        "seconds": round(time.monotonic() - started, 2),
        **{key: round(value, 2) for key, value in timings.items()},
        "changes": found[:20],
        "lock": {stage: entry},
    }


def pull_outputs(root: Path, paths: Sequence[str], settings: DvcSettings) -> None:
    """Bring `paths` (outputs recorded in the checkout's dvc.lock) from this worker's cache, else
    from the remote."""
    with open_repo(root, settings) as repo:
        if checkout_from_cache(repo, paths):
            return
        check_remote(repo, settings)
        on_remote(settings, f"pulling {', '.join(paths)}", lambda: repo.pull(targets=list(paths)))


def missing_on_remote(root: Path, settings: DvcSettings) -> list[str]:
    """Outputs in the checkout's dvc.lock that the remote lacks, after pushing those this worker
    still holds: a lock naming them must not be published."""
    with open_repo(root, settings) as repo:
        check_remote(repo, settings)
        cloud = on_remote(settings, "checking the run's outputs", lambda: repo.status(cloud=True))
        local_only = sorted(path for path, state in cloud.items() if state == "new")
        if local_only:
            on_remote(settings, f"pushing {', '.join(local_only)}", lambda: repo.push(targets=local_only))
            cloud = on_remote(settings, "checking the run's outputs", lambda: repo.status(cloud=True))
    return sorted(path for path, state in cloud.items() if state in ("missing", "new"))

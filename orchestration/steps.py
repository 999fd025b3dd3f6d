"""What the retraining DAG's tasks do, without Airflow: plain values in, a small dict out.

`orchestration/tasks.py` adapts these to Airflow (context, XCom, retries); tests chain them
directly, as one worker or as several (one `worker_root` each).

- `prepare`: the run's commit on the workspace's git remote (orchestration.workspace);
- `stage`: a fresh checkout of it on this worker; the `dvc.lock` entries of the stage's upstream
  stages (their task results) merged in; the stage brought up to date through DVC
  (orchestration.dvc_runner); its own entry returned;
- `checkout_outputs`: a checkout holding chosen outputs of the run (what the gate and the push read);
- `publish`: every stage's entry merged into one lock, checked against the DVC remote, committed,
  tagged and pushed with the model registry's tags.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration import dvc_runner, lockfile, pinning, registry, workspace
from orchestration.drift_reference import DriftPaths, commit_reference, drift_paths, write_reference
from orchestration.dvc_graph import StageGraph, read_graph
from orchestration.hostname import worker_hostname
from orchestration.params import AirflowParams
from orchestration.remote import RemoteError, resolve
from orchestration.run_values import PreparedRun
from orchestration.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fleet:
    """Everything a task needs to know about where it works, resolved on the worker that runs it
    (params.yaml, this worker's environment, an optional Airflow Connection for the DVC remote)."""

    ws: Workspace
    dvc: dvc_runner.DvcSettings
    graph: StageGraph

    @classmethod
    def resolve(
        cls,
        project: str | Path,
        env: Mapping[str, str] | None = None,
        connection: Mapping[str, Any] | None = None,
        params: AirflowParams | None = None,
    ) -> Fleet:
        """`params`: the project's `airflow:` section when the caller has read it already."""
        ws = Workspace.resolve(project, env, params)
        remote = resolve(ws.project, ws.params.dvc_remote, env, connection)
        return cls(ws=ws, dvc=dvc_runner.DvcSettings(ws.cache_dir, remote), graph=read_graph(ws.project))

    @property
    def order(self) -> list[str]:
        return list(self.graph.stages)

    @property
    def drift(self) -> DriftPaths | None:
        """The drift stage's metrics, profile and reference (None: the pipeline has none)."""
        return drift_paths(self.graph, self.ws.params.drift_stage, strict=False)


def task_folder(name: str, try_number: int) -> str:
    """A retry gets a folder of its own: a dead try may still hold files in the old one."""
    return name if try_number <= 1 else f"{name}.try{try_number}"


def inputs(graph: StageGraph, name: str) -> tuple[list[str], list[str]]:
    """The DVC-tracked paths `name` reads (outputs of upstream stages that its deps cover), and
    the deps that cover them."""
    deps = graph.stages[name].deps
    found, covering = set(), set()
    for up in graph.upstream[name]:
        for out in graph.stages[up].outs:
            for dep in deps:
                if out == dep or out.startswith(dep + "/"):
                    found.add(out)
                    covering.add(dep)
                elif dep.startswith(out + "/"):
                    found.add(dep)
                    covering.add(dep)
    return sorted(found), sorted(covering)


def prepare(
    fleet: Fleet, run_id: str, as_of: str | None, overrides: Mapping[str, str | None] | None = None
) -> PreparedRun:
    """`overrides`: `section.key` -> value set in the run's params.yaml (the Trigger form's). A
    data source in object storage is pinned into the commit (`orchestration.pinning`); the value
    says what was pinned (`pinned`: source, objects, bytes; None for a local source)."""
    pinned: dict[str, Any] = {}

    def name_remote(root: Path) -> None:
        for dotted, value in (overrides or {}).items():
            section, key = dotted.split(".", 1)
            params = root / "params.yaml"
            params.write_text(workspace.set_param(params.read_text(), section, key, value))
        pinned["pinned"] = pinning.pin_checkout(root)
        dvc_runner.record_remote(root, fleet.dvc)
        dvc_runner.check_remote_at(root, fleet.dvc)  # an unreachable remote fails here, not in every stage

    owned = fleet.drift.owned if fleet.drift else []  # published by publish, kept across runs
    prepared = workspace.prepare(
        fleet.ws, workspace.safe_run_key(run_id), as_of, before_commit=name_remote, owned=owned
    )
    return dataclasses.replace(prepared, pinned=pinned.get("pinned"))


def producers(graph: StageGraph, paths: Sequence[str]) -> set[str]:
    """The stages that write `paths` (an output, a file inside one, or a folder holding one)."""
    return {
        name
        for name, stage in graph.stages.items()
        for out in stage.outs
        for path in paths
        if out == path or path.startswith(out + "/") or out.startswith(path + "/")
    }


def stage_scope(graph: StageGraph, name: str) -> set[str]:
    """The dvc.lock entries DVC needs to bring stage `name` up to date: its own and its inputs' writers."""
    return {name, *graph.upstream[name]}


def _write_lock(root: Path, entries: Mapping[str, lockfile.Entry], keep: Collection[str] | None = None) -> None:
    """Write `entries` as the checkout's dvc.lock, only those of the stages in `keep` (default:
    all): DVC reads and rewrites the whole file a dozen times per task, which for a long
    pipeline's lock took most of a stage task's own time, and a task's DVC calls need only the
    entries of its scope (stage_scope, producers)."""
    written = entries if keep is None else {name: entry for name, entry in entries.items() if name in keep}
    (root / "dvc.lock").write_text(lockfile.dump(written))


def _merged(
    fleet: Fleet,
    root: Path,
    results: Sequence[Mapping[str, Any]],
    require: Sequence[str],
    keep: Collection[str] | None = None,
) -> tuple[dict[str, lockfile.Entry], dict[str, lockfile.Entry]]:
    """Write into the checkout's dvc.lock the entries of `results` over the run's base lock, all
    checked, keeping only the stages in `keep` (_write_lock). Returns the base lock and the
    merged one."""
    entries = lockfile.latest_entries(results)
    base = lockfile.read(root)
    merged = lockfile.merge(base, entries, fleet.order)
    lockfile.verify(merged, require=require, among=set(entries) | set(require))
    _write_lock(root, merged, keep)
    return base, merged


def stage_checkout(
    fleet: Fleet,
    run_id: str,
    prepared: PreparedRun,
    name: str,
    upstream: Sequence[Mapping[str, Any]],
    folder: str,
) -> tuple[Path, dict[str, lockfile.Entry], dict[str, lockfile.Entry]]:
    """A checkout of the run in `folder` whose dvc.lock holds what stage `name` needs: the entries
    of its ancestors from `upstream` (their task results) over the run's base lock. Returns the
    checkout, the base lock and the merged one."""
    root = workspace.checkout(fleet.ws, workspace.safe_run_key(run_id), folder, prepared.ref, prepared.commit)
    ancestors = sorted(fleet.graph.ancestors(name))
    base, merged = _merged(
        fleet,
        root,
        [r for r in upstream if r and r.get("stage") in ancestors],
        require=ancestors,
        keep=stage_scope(fleet.graph, name),
    )
    return root, base, merged


def stage(
    fleet: Fleet,
    run_id: str,
    prepared: PreparedRun,
    name: str,
    upstream: Sequence[Mapping[str, Any]],
    try_number: int = 1,
) -> dict[str, Any]:
    """Bring stage `name` up to date in a checkout of its own; `upstream` holds the results of
    the tasks of the stages it depends on (all its ancestors)."""
    root, base, merged = stage_checkout(fleet, run_id, prepared, name, upstream, task_folder(name, try_number))
    ancestors = sorted(fleet.graph.ancestors(name))
    paths, covering = inputs(fleet.graph, name)
    # The base lock is a published one: consistent, and its outputs were on the remote when published.
    as_locked = name in base and all(merged.get(a) == base.get(a) for a in ancestors)
    result = dvc_runner.run_stage(root, name, paths, fleet.dvc, covering, inputs_as_locked=as_locked)
    # the worker's own name for itself; Airflow records its [core] hostname_callable's, which should agree
    return {**result, "workspace": str(root), "host": worker_hostname(), "try_number": try_number}


def checkout_outputs(
    fleet: Fleet,
    run_id: str,
    prepared: PreparedRun,
    results: Sequence[Mapping[str, Any]],
    task: str,
    paths: Sequence[str],
    try_number: int = 1,
) -> Path:
    """A checkout of the run with its merged lock and `paths` (outputs of the run) pulled."""
    root = workspace.checkout(
        fleet.ws, workspace.safe_run_key(run_id), task_folder(task, try_number), prepared.ref, prepared.commit
    )
    _merged(fleet, root, results, require=fleet.order, keep=producers(fleet.graph, paths))
    dvc_runner.pull_outputs(root, paths, fleet.dvc)
    return root


def publish(
    fleet: Fleet,
    run_id: str,
    prepared: PreparedRun,
    results: Sequence[Mapping[str, Any]],
    version: int,
    model: str,
    message: str,
    try_number: int = 1,
) -> dict[str, Any]:
    """Publish the run as version `version` of `model`. Safe to retry: a version whose tag is on
    the remote already is done, and the one push is atomic."""
    ws = fleet.ws
    tag = f"{ws.params.tag_prefix}{version}"
    existing = workspace.remote_ref(ws, f"refs/tags/{tag}")
    if existing:
        log.info("%s already tags commit %s; nothing to publish", tag, existing[:12])
        return {"tag": tag, "commit": existing, "pushed": False}
    root = workspace.checkout(
        ws,
        workspace.safe_run_key(run_id),
        task_folder("publish", try_number),
        prepared.ref,
        prepared.commit,
        depth=2,
    )
    _merged(fleet, root, results, require=fleet.order)
    missing = dvc_runner.missing_on_remote(root, fleet.dvc)
    if missing:
        where = fleet.dvc.remote.describe() if fleet.dvc.remote else "the default DVC remote"
        raise RemoteError(
            f"{where} lacks outputs of this run: {', '.join(missing[:10])}; nothing was published. "
            "Clear the stage tasks that wrote them so that they push again."
        )
    workspace.fetch_tags(ws, root)
    commit, tag = workspace.commit_published(ws, root, (root / "dvc.lock").read_text(), version, message)
    author = workspace.split_author(ws.params.git_author)
    tags = [tag, *registry.register(root, model, version, ws.params.registry_stage, message, author)]
    head = publish_reference(fleet, root, tag) or commit  # the next run compares its data with this version's
    workspace.push_published(ws, root, head, tags)
    return {"tag": tag, "commit": commit, "pushed": True, "tags": tags, "workspace": str(root)}


def publish_reference(fleet: Fleet, root: Path, tag: str) -> str | None:
    """In publish's checkout (at the commit tagged `tag`): make the run's data profile the drift
    reference, bring the drift stage up to date against it (so that the next run on the same data
    finds it unchanged) and commit both; returns that commit (None: no drift stage, or nothing
    changed)."""
    drift = fleet.drift
    if drift is None:
        return None
    dvc_runner.pull_outputs(root, drift.sources(root), fleet.dvc)
    if not write_reference(root, drift, tag):
        log.info("the drift reference %s is already the data of %s", drift.reference, tag)
        return None
    paths, covering = inputs(fleet.graph, drift.stage)
    published = lockfile.read(root)
    _write_lock(root, published, stage_scope(fleet.graph, drift.stage))  # the rest stays as published
    result = dvc_runner.run_stage(root, drift.stage, paths, fleet.dvc, covering)
    _write_lock(root, lockfile.merge(published, result["lock"], fleet.order))
    return commit_reference(root, drift, tag, fleet.ws.git_env())


def rollback_reference(fleet: Fleet, version: int, run_key: str) -> str | None:
    """After a rollback to `version`: make that version's data profile the drift reference on the
    published branch, with the drift stage up to date against it, so that the next run compares its
    data with what serves again. Returns the commit pushed (None: no drift stage, or the reference
    is that version's already)."""
    drift = fleet.drift
    if drift is None:
        return None
    ws = fleet.ws
    tag = f"{ws.params.tag_prefix}{version}"
    # the profile as version N's run wrote it (its tag's dvc.lock names it; the remote holds it)
    tagged = workspace.checkout(ws, run_key, "rollback-source", f"refs/tags/{tag}")
    dvc_runner.pull_outputs(tagged, drift.sources(tagged), fleet.dvc)
    root = workspace.checkout(ws, run_key, "rollback", f"refs/heads/{ws.params.git_branch}")
    if not write_reference(root, drift, tag, source=tagged):
        log.info("the drift reference %s is already the data of %s", drift.reference, tag)
        return None
    paths, covering = inputs(fleet.graph, drift.stage)
    dvc_runner.run_stage(root, drift.stage, paths, fleet.dvc, covering)
    head = commit_reference(root, drift, tag, ws.git_env())
    workspace.push_published(ws, root, head, [])
    return head

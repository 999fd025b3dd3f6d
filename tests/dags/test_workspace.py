"""The workspace's git side: settings per worker, run keys, mirroring sources, pruning checkouts.
(The whole flow across workers is in test_fleet_steps.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from support import GIT_ENV

from orchestration.workspace import (
    Workspace,
    is_url,
    prune_runs,
    safe_run_key,
    set_param,
    source_files,
    sync,
)
from pipeline.params import load_params

ROOT = Path(__file__).resolve().parents[2]


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env=env).stdout.strip()


def test_set_param_edits_one_line_and_keeps_comments() -> None:
    text = (ROOT / "params.yaml").read_text()
    edited = set_param(text, "embed", "as_of", "2026-01-19")
    assert yaml.safe_load(edited)["embed"]["as_of"] == "2026-01-19"
    changed = [(a, b) for a, b in zip(text.splitlines(), edited.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and "# null = all batches" in changed[0][1]
    assert yaml.safe_load(set_param(edited, "embed", "as_of", None))["embed"]["as_of"] is None
    with pytest.raises(ValueError, match="embed.nope"):
        set_param(text, "embed", "nope", "x")


def test_each_worker_gets_its_own_root_from_the_environment(project_copy: Path) -> None:
    default = Workspace.resolve(project_copy, env={})
    assert default.worker_root == project_copy / ".airflow" / "worker"
    assert default.git_remote == str(project_copy / ".airflow" / "workspace.git")
    gpu = Workspace.resolve(project_copy, env={"RETRAIN_WORKER_ROOT": "/srv/worker-gpu"})
    cpu = Workspace.resolve(project_copy, env={"RETRAIN_WORKER_ROOT": "/srv/worker-cpu"})
    assert gpu.worker_root != cpu.worker_root and gpu.cache_dir != cpu.cache_dir
    assert gpu.checkout_path("r1", "train") == Path("/srv/worker-gpu/runs/r1/train")
    url = Workspace.resolve(project_copy, env={"RETRAIN_GIT_REMOTE": "https://git.example.com/ml/ws.git"})
    assert url.git_remote == "https://git.example.com/ml/ws.git"


def test_run_keys_urls_and_redaction() -> None:
    from orchestration.remote import redact

    assert safe_run_key("manual__2026-01-26T00:00:00+00:00") == "manual__2026-01-26T00_00_00_00_00"
    assert safe_run_key("scheduled__2026-01-26") == "scheduled__2026-01-26"
    assert ".." not in safe_run_key("a..b") and safe_run_key("...") == "run"
    assert is_url("https://host/x.git") and is_url("git@host:ml/ws.git") and is_url("file:///srv/ws.git")
    assert not is_url("/srv/ws.git") and not is_url(".airflow/workspace.git")
    assert redact("https://bot:s3cret@git.example.com/ws.git") == "https://***@git.example.com/ws.git"
    assert redact("/srv/ws.git") == "/srv/ws.git"


def test_sync_mirrors_sources_sets_as_of_and_removes_deleted_files(project_copy: Path, tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    root.mkdir()
    git(root, "init", "-q")
    (project_copy / "dvc.lock").write_text("the project's own lock\n")
    changed, removed = sync(project_copy, root, "2026-01-19")
    assert (root / "stages" / "embed.py").is_file() and "dags/retrain.py" in source_files(project_copy)
    assert not (root / "dvc.lock").exists(), "dvc.lock belongs to the workspace, never copied"
    assert load_params(root / "params.yaml").embed.as_of == "2026-01-19"
    assert load_params(project_copy / "params.yaml").embed.as_of is None, "the project is never edited"
    assert "params.yaml" in changed and removed == []
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "sources")

    # A file deleted in the project disappears from the checkout; an unchanged sync changes nothing.
    (project_copy / "stages" / "embed.py").rename(project_copy / "stages" / "embed_renamed.py")
    changed, removed = sync(project_copy, root, "2026-01-19")
    assert removed == ["stages/embed.py"] and changed == ["stages/embed_renamed.py"]
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "renamed")
    assert sync(project_copy, root, "2026-01-19") == ([], [])


def test_prune_keeps_the_newest_runs_and_the_current_one(project_copy: Path, tmp_path: Path) -> None:
    ws = Workspace.resolve(project_copy, env={"RETRAIN_WORKER_ROOT": str(tmp_path / "w")})
    assert ws.params.worker_keep_runs == 2
    for i, name in enumerate(["r1", "r2", "r3", "r4"]):
        folder = ws.checkout_path(name, "train")
        folder.mkdir(parents=True)
        os.utime(folder.parent, (1_000_000 + i, 1_000_000 + i))
    prune_runs(ws, keep="r1")
    assert sorted(p.name for p in (ws.worker_root / "runs").iterdir()) == ["r1", "r4"]

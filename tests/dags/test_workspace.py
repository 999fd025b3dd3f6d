"""The workspace repository: sync from the project, demo-mode params, publish (commit + tag)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from orchestration.workspace import Workspace, publish, set_param, source_files, sync
from pipeline.params import load_params

ROOT = Path(__file__).resolve().parents[2]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_set_param_edits_one_line_and_keeps_comments() -> None:
    text = (ROOT / "params.yaml").read_text()
    edited = set_param(text, "embed", "as_of", "2026-01-19")
    assert yaml.safe_load(edited)["embed"]["as_of"] == "2026-01-19"
    changed = [(a, b) for a, b in zip(text.splitlines(), edited.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and "# null = all batches" in changed[0][1]
    assert yaml.safe_load(set_param(edited, "embed", "as_of", None))["embed"]["as_of"] is None
    with pytest.raises(ValueError, match="embed.nope"):
        set_param(text, "embed", "nope", "x")


@pytest.fixture
def workspace(project_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.delenv("RETRAIN_WORKSPACE", raising=False)
    monkeypatch.delenv("RETRAIN_DVC_REMOTE", raising=False)
    return Workspace.resolve(project_copy)


def test_sync_mirrors_sources_and_sets_as_of(workspace: Workspace) -> None:
    project, root = workspace.project, workspace.root
    assert root == project / ".airflow" / "workspace"
    (project / "dvc.lock").write_text("the project's own lock\n")
    result = sync(workspace, "2026-01-19")

    assert (root / ".git").is_dir() and (root / "stages" / "embed.py").is_file()
    assert not (root / "dvc.lock").exists(), "dvc.lock belongs to the workspace, never copied"
    assert "dags/retrain.py" in source_files(project)
    assert load_params(root / "params.yaml").embed.as_of == "2026-01-19"
    assert load_params(project / "params.yaml").embed.as_of is None, "the project is never edited"
    assert "url = " + str(project / ".dvc-remote") in (root / ".dvc" / "config.local").read_text()

    # A file deleted in the project disappears from the workspace; an unchanged sync changes nothing.
    (project / "stages" / "embed.py").rename(project / "stages" / "embed_renamed.py")
    second = sync(workspace, "2026-01-19")
    assert second["removed"] == ["stages/embed.py"] and second["changed"] == ["stages/embed_renamed.py"]
    assert sync(workspace, "2026-01-19")["changed"] == []
    assert result["source_commit"] and len(result["source_commit"]) >= 7


def test_publish_commits_and_tags_once(workspace: Workspace) -> None:
    sync(workspace, None)
    (workspace.root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    first = publish(workspace, 3, "digits", "data as of all batches")
    assert first["pushed"] and first["tag"] == "model-v3"
    root = workspace.root
    assert git(root, "rev-parse", "model-v3^{commit}") == first["commit"]
    assert git(root, "log", "-1", "--format=%an <%ae>") == workspace.params.git_author
    assert "dvc.lock" in git(root, "show", "--name-only", "--format=", "model-v3")
    # A retry after success publishes nothing new.
    again = publish(workspace, 3, "digits", "data as of all batches")
    assert not again["pushed"] and again["commit"] == first["commit"]
    assert git(root, "rev-list", "--count", "HEAD") == "2"  # the sources of the run + the model

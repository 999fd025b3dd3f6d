"""The documentation site and the deployment manifests, checked in the suite.

`mkdocs build --strict` turns every warning into a failure: a link to a page or heading that does
not exist, a page under docs/ that the nav leaves out, a file included with `--8<--` that is not
there. The Kubernetes manifests under deploy/kubernetes/ are validated against the Kubernetes
schemas shipped in the kubernetes-validate wheel (offline), strictly: an unknown field fails.
No cluster can run here; the schemas are what a cluster's API server would check the fields with.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
# The oldest Kubernetes release the manifests are meant for, and the newest the wheel knows.
KUBERNETES_VERSIONS = ("1.30", latest_version())


def build_site(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


def docs_copy(tmp_path: Path) -> Path:
    """What the site is built from (mkdocs.yml, docs/ and the files the pages include), in tmp_path."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(ROOT / "mkdocs.yml", project)
    shutil.copy2(ROOT / "params.yaml", project)
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copytree(ROOT / "deploy", project / "deploy")
    return project


def test_site_builds_strict_with_the_repository_files_included(tmp_path: Path) -> None:
    result = build_site(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    deployment = (tmp_path / "site" / "deployment" / "index.html").read_text()
    params = (tmp_path / "site" / "params" / "index.html").read_text()
    # The pages show the files themselves, not the include lines.
    assert "retrain-credentials" in deployment and "nvidia.com/gpu" in deployment
    assert "--8&lt;--" not in deployment and "--8<--" not in deployment
    assert "cpu_threads" in params and "gpu_pool_slots" in params


@pytest.mark.parametrize(
    "link", ["airflow.md#no-such-heading", "no-such-page.md", "/getting-started/"], ids=["anchor", "page", "absolute"]
)
def test_site_build_fails_on_a_broken_link(tmp_path: Path, link: str) -> None:
    project = docs_copy(tmp_path)
    with (project / "docs" / "serving.md").open("a") as page:
        page.write(f"\nSee [there]({link}).\n")
    result = build_site(project, tmp_path / "site")
    assert result.returncode != 0, f"the strict build let the link {link!r} through"
    assert link in result.stdout + result.stderr


def test_site_build_fails_when_an_included_file_is_missing(tmp_path: Path) -> None:
    project = docs_copy(tmp_path)
    (project / "deploy" / "kubernetes" / "pod-template.yaml").unlink()
    result = build_site(project, tmp_path / "site")
    assert result.returncode != 0
    assert "pod-template.yaml" in result.stdout + result.stderr


def test_readme_is_a_front_door_whose_links_work_on_github() -> None:
    """README.md stays short (the rest is in docs/), and its links into the repository are relative
    paths to files that exist, so that they work on GitHub and in a clone alike."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert any(t.startswith("docs/") for t in targets)
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue  # another site
        assert not target.startswith("/"), f"README links to {target!r}: use a path relative to the README"
        path = target.split("#", 1)[0]
        assert (ROOT / path).exists(), f"README links to {target!r}, which does not exist"


def resources(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schemas(manifest: Path) -> None:
    found = resources(manifest)
    assert found, f"{manifest.name} holds no resource"
    for resource in found:
        for version in KUBERNETES_VERSIONS:
            # Raises on an unknown field, a wrong type, or a kind/apiVersion it has no schema for
            # (the CLI only warns about the last one).
            kubernetes_validate.validate(resource, version, strict=True)


def test_manifests_include_the_pod_templates() -> None:
    assert {p.name for p in MANIFESTS} >= {"pod-template.yaml", "pod-template-gpu.yaml"}


def test_manifest_check_rejects_an_unknown_field() -> None:
    pod = resources(ROOT / "deploy" / "kubernetes" / "pod-template.yaml")[0]
    pod["spec"]["containers"][0]["gpuLimit"] = 1  # not a field of a Container
    with pytest.raises(kubernetes_validate.ValidationError, match="gpuLimit"):
        kubernetes_validate.validate(pod, KUBERNETES_VERSIONS[0], strict=True)

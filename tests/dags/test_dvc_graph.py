"""The YAML-only reader of dvc.yaml must agree with DVC itself: the same stage names (foreach and
matrix expanded), the same commands, the same edges."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from orchestration.dvc_graph import DvcGraphError, read_graph
from orchestration.params import AirflowParams
from orchestration.spec import SpecError, stage_tasks
from orchestration.workspace import dvc_command

ROOT = Path(__file__).resolve().parents[2]


def dvc_view(root: Path) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Stage names -> commands, and (upstream, downstream) edges, as DVC's own index has them."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        commands = {stage.name: stage.cmd for stage in graph.nodes}
        edges = {(up.name, down.name) for down, up in graph.edges()}
    return commands, edges


def assert_same_as_dvc(root: Path) -> None:
    ours = read_graph(root)
    commands, edges = dvc_view(root)
    assert set(ours.stages) == set(commands)
    assert {name: stage.cmd for name, stage in ours.stages.items()} == commands
    assert ours.edges == edges


def test_project_graph_matches_dvc() -> None:
    assert_same_as_dvc(ROOT)


TOY = """
vars:
  - extra: {suffix: txt}
stages:
  prep:
    cmd: echo prep > raw.${extra.suffix}
    outs:
      - raw.${extra.suffix}
  grid:
    matrix:
      model: [cnn, mlp]
      lr: ${lrs}
    cmd: echo ${item.model} ${item.lr} > out/${item.model}-${item.lr}.json
    deps:
      - raw.txt
    outs:
      - out/${item.model}-${item.lr}.json
  shard:
    foreach:
      a: {n: 1}
      b: {n: 2}
    do:
      cmd: echo ${key} ${item.n} > shards/${key}
      deps:
        - raw.txt
      outs:
        - shards/${key}
  report:
    cmd: ls out shards > report.txt
    deps:
      - out
      - shards
    metrics:
      - report.txt:
          cache: false
"""


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent(TOY))
    (tmp_path / "params.yaml").write_text("lrs: [0.1, 0.01]\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(dvc_command("init", "-q"), cwd=tmp_path, check=True)
    return tmp_path


def test_matrix_dict_foreach_vars_and_directory_deps_match_dvc(toy: Path) -> None:
    assert_same_as_dvc(toy)
    graph = read_graph(toy)
    assert graph.groups() == {
        "grid": ["grid@cnn-0.1", "grid@cnn-0.01", "grid@mlp-0.1", "grid@mlp-0.01"],
        "shard": ["shard@a", "shard@b"],
    }
    assert graph.upstream["report"] == {*graph.groups()["grid"], *graph.groups()["shard"]}
    assert graph.reduced_upstream("report") == graph.upstream["report"]
    assert graph.leaves() == ["report"] and graph.roots() == ["prep"]


def test_task_ids_groups_and_gpu_flags(toy: Path) -> None:
    tasks = {t.stage.name: t for t in stage_tasks(read_graph(toy), AirflowParams(gpu_stages=["grid", "prep"]))}
    assert tasks["grid@cnn-0.1"].full_id == "grid.cnn-0_1"
    assert tasks["shard@a"].full_id == "shard.a"
    assert [n for n, t in tasks.items() if t.gpu] == ["prep", *read_graph(toy).groups()["grid"]]


def test_unknown_gpu_stage_is_an_error(toy: Path) -> None:
    with pytest.raises(SpecError, match="trian"):
        stage_tasks(read_graph(toy), AirflowParams(gpu_stages=["trian"]))


def test_unresolvable_interpolation_names_the_stage(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages:\n  a:\n    cmd: echo ${nope.key}\n")
    with pytest.raises(DvcGraphError, match=r"stage a.*nope"):
        read_graph(tmp_path)

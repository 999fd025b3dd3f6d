"""Fixtures for the tests that run Airflow (tests/dags, tests/devtools; a plugin of tests/conftest.py):
Airflow homes on SQLite in tmp folders, migrated once per session.

`airflow db migrate` runs once into a template home; each test module that needs Airflow gets a
copy of that database (milliseconds) with its own DAG folder, so modules never see each other's
runs or DAG versions.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support import GIT_ENV, copy_project, free_ports, started

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def airflow_env(home: Path, dags: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW_", "AIRFLOW__", "TRITON_", "RETRAIN_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def airflow(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode:
        raise AssertionError(
            f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout + result.stderr


def dags_test(
    env: dict[str, str], project: Path, date: str, *extra: str, dag_id: str = "retrain", timeout: float = 1500
) -> tuple[str | None, str, dict[str, str]]:
    """`airflow dags test <dag_id> <date> [extra]` in `project`: (run id, output, each task's state
    from the metadata database). No run id (and no states) when Airflow created no run."""
    result = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", dag_id, date, *extra],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    found = re.findall(rf"DagRun Finished: dag_id={re.escape(dag_id)}, .*?run_id=([^,]+),", output)
    if not found:
        return None, output, {}
    rows = json.loads(
        airflow(env, "tasks", "states-for-dag-run", dag_id, found[-1], "--output", "json").strip().splitlines()[-1]
    )
    return found[-1], output, {row["task_id"]: row["state"] for row in rows}


def dags_test_run(env: dict[str, str], project: Path, date: str, *extra: str) -> tuple[str, str, dict[str, str]]:
    """`dags_test` that must have created and finished a run."""
    run_id, output, states = dags_test(env, project, date, *extra)
    assert run_id, f"no finished run in the output:\n{output[-5000:]}"
    return run_id, output, states


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow metadata database, migrated once for the session."""
    home = tmp_path_factory.mktemp("airflow-template")
    airflow(airflow_env(home, ROOT / "dags"), "db", "migrate")
    return home / "airflow.db"


@pytest.fixture(scope="module")
def make_airflow_home(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> Callable[..., dict[str, str]]:
    """make_airflow_home(dags_folder, **env) -> the environment of a fresh, migrated Airflow home."""

    def make(dags: Path, **extra: str) -> dict[str, str]:
        home = tmp_path_factory.mktemp("airflow-home")
        shutil.copyfile(migrated_db, home / "airflow.db")
        return airflow_env(home, dags, **extra)

    return make


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A fresh copy of the project's sources as its own git repository."""
    target = tmp_path / "project"
    target.mkdir()
    return copy_project(target)


# A toy DVC project for the fleet's task bodies: seconds per stage instead of minutes.
TOY_PARAMS = """
data:
  source: data.txt
  label: label
  classes: [0, 1]
train:
  model:
    arch: mlp
airflow:
  demo_batches: false
  gpu_stages: []
"""

TOY_DVC_YAML = """
stages:
  prep:
    cmd: python prep.py
    deps:
      - prep.py
    outs:
      - data.txt
  fold:
    foreach: [0, 1, 2]
    do:
      cmd: python work.py ${item}
      deps:
        - data.txt
        - work.py
      outs:
        - out/${item}.json
  summary:
    cmd: python summary.py
    deps:
      - out
      - summary.py
    outs:
      - summary.json
"""

TOY_PREP = "open('data.txt', 'w').write('rows v1')\n"
TOY_WORK = """
import json, os, sys
os.makedirs("out", exist_ok=True)
with open(f"out/{sys.argv[1]}.json", "w") as f:
    json.dump({"fold": sys.argv[1], "data": open("data.txt").read(), "pid": os.getpid()}, f)
"""
TOY_SUMMARY = """
import json, os
folds = sorted(os.listdir("out"))
json.dump({"folds": folds}, open("summary.json", "w"))
"""
TOY_ORDER = ["prep", "fold@0", "fold@1", "fold@2", "summary"]


def toy_project(target: Path) -> Path:
    """The toy project as a fresh git + DVC repository at `target`."""
    target.mkdir(parents=True)
    files = {
        "params.yaml": TOY_PARAMS,
        "dvc.yaml": TOY_DVC_YAML,
        "prep.py": TOY_PREP,
        "work.py": TOY_WORK,
        "summary.py": TOY_SUMMARY,
        ".gitignore": "/.airflow/\n/.dvc-remote/\n",
    }
    for name, text in files.items():
        (target / name).write_text(textwrap.dedent(text))
    env = {**os.environ, **GIT_ENV}
    for cmd in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "toy"],
    ):
        subprocess.run(cmd, cwd=target, env=env, check=True, capture_output=True)
    return target


@contextlib.contextmanager
def api_server(env: dict[str, str], port: int, log: Path) -> Iterator[Any]:
    """`airflow api-server` on 127.0.0.1:`port` until the block ends: an AirflowApi on it, once healthy."""
    from devtools.airflow_api import AirflowApi, AirflowApiError

    cmd = [str(BIN / "airflow"), "api-server", "--port", str(port)]
    with started(cmd, env, log) as process:
        api = AirflowApi(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(AirflowApiError):
                api.health()
                break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield api


@contextlib.contextmanager
def standalone_api(env: dict[str, str], log: Path, cwd: Path, port: int, dag_id: str) -> Iterator[Any]:
    """`airflow standalone` (scheduler, triggerer, dag-processor, api-server on `port`) until the
    block ends: an AirflowApi on it once the api-server answers and `dag_id` has been parsed."""
    from devtools.airflow_api import AirflowApi, AirflowApiError

    with started([str(BIN / "airflow"), "standalone"], env, log, cwd=cwd) as process:
        api = AirflowApi(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, log.read_text()[-4000:]
            with contextlib.suppress(AirflowApiError):
                api.dag(dag_id)
                break
            assert time.monotonic() < deadline, f"the DAG {dag_id} never appeared:\n{log.read_text()[-4000:]}"
            time.sleep(2)
        yield api


def wait_for(what: str, check: Callable[[], Any], log: Path, timeout_s: float = 180, poll_s: float = 0.5) -> Any:
    """`check()`'s first true value, polled every `poll_s`; fails with `log`'s tail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f}s\n{log.read_text()[-4000:]}"
        time.sleep(poll_s)
    return found


# Airflow set up for a team, as the docs' team-setup page describes: the simple auth manager with
# users and passwords (no all-admins), multi-team mode, and the DAG folder's bundle owned by TEAM.
# alice may read TEAM's DAGs; mallory is a viewer of another team's.
TEAM = "ml-team"
USERS = {"alice": ("viewer", TEAM), "mallory": ("viewer", "other-team")}


def team_auth(env: dict[str, str]) -> dict[str, str]:
    """`env` (an Airflow home's) with USERS logging in (password `<user>-password`); their teams
    exist in its database."""
    passwords = Path(env["AIRFLOW_HOME"]) / "passwords.json"
    passwords.write_text(json.dumps({user: f"{user}-password" for user in USERS}))
    bundle = {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle"}
    env = {
        **env,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}:{t}" for u, (r, t) in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__MULTI_TEAM": "True",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([{**bundle, "kwargs": {}, "team_name": TEAM}]),
    }
    for team in sorted({team for _, team in USERS.values()}):  # before the DAG's first parse, which
        airflow(env, "teams", "create", team)  # gives the bundle to its team
    return env


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """This file's plain helpers, for test modules (conftest is not importable by name)."""
    return SimpleNamespace(
        airflow=airflow,
        airflow_env=airflow_env,
        api_server=api_server,
        standalone_api=standalone_api,
        wait_for=wait_for,
        dags_test=dags_test,
        dags_test_run=dags_test_run,
        free_ports=free_ports,
        copy_project=copy_project,
        toy_project=toy_project,
        toy_order=TOY_ORDER,
        team_auth=team_auth,
        users=USERS,
    )

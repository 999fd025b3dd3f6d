"""Fixtures for the DAG tests: Airflow homes on SQLite in tmp folders, migrated once per session.

`airflow db migrate` runs once into a template home; each test module that needs Airflow gets a
copy of that database (milliseconds) with its own DAG folder, so modules never see each other's
runs or DAG versions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import copy_project, free_ports

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """This file's plain helpers, for test modules (conftest is not importable by name)."""
    return SimpleNamespace(airflow=airflow, airflow_env=airflow_env, free_ports=free_ports, copy_project=copy_project)

"""`make run` (devtools.local.run_once) runs `airflow dags test` so that every run is one of its own in
Airflow's history, started when it really started (the UI showed "301d 10h" for a run on the demo's
date, and each run replaced the previous one). Its command, on a one-task DAG under a real Airflow."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest

from devtools.airflow_home import airflow_bin
from devtools.local import dags_test_command

pytestmark = pytest.mark.airflow

DAG = """
import datetime as dt

from airflow.sdk import DAG, Param, task

with DAG("tiny", schedule=None, start_date=dt.datetime(2026, 1, 5), params={"as_of": Param(None, type=["null", "string"])}):

    @task
    def record(**context):
        with open(OUT, "a") as out:
            out.write(str(context["params"]["as_of"]) + "\\n")

    record()
"""


def test_every_run_is_its_own_and_starts_when_it_ran(tmp_path: Path, make_airflow_home) -> None:
    dags, out = tmp_path / "dags", tmp_path / "as_of.txt"
    dags.mkdir()
    (dags / "tiny.py").write_text(DAG.replace("OUT", repr(str(out))))
    env = make_airflow_home(dags)
    began = dt.datetime.now(dt.UTC)
    for _ in range(2):
        done = subprocess.run(
            dags_test_command("tiny", "2026-02-09"), env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    listed = subprocess.run(
        [airflow_bin(), "dags", "list-runs", "tiny", "--output", "json"], env=env, capture_output=True, text=True
    )
    runs = json.loads(listed.stdout.strip().splitlines()[-1])
    assert len({run["run_id"] for run in runs}) == 2  # the second run did not replace the first
    starts = [dt.datetime.fromisoformat(run["start_date"]) for run in runs]
    assert all(start >= began - dt.timedelta(minutes=1) for start in starts), starts  # not the data's date
    assert out.read_text().split() == ["2026-02-09", "2026-02-09"]  # the demo's date reached the run

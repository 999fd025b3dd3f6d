"""The study on a real Postgres (Debian's server, started by the project's own cluster code on a free
127.0.0.1 port): what the fleet's trials share. Optuna's RDB storage through SQLAlchemy 2 and
psycopg2, the versions Airflow pins: plan, a second plan after a worker died, the winner."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState
from support import free_ports

from devtools.cluster.database import pg_bin, start_postgres, stop_postgres
from devtools.cluster.settings import DATABASE, ClusterError, ClusterSettings
from orchestration.sweep import study as studies
from orchestration.sweep.params import SweepParams
from orchestration.sweep.winner import best

pytestmark = pytest.mark.cluster  # starts Postgres, one of the cluster's servers

SWEEP = SweepParams.model_validate(
    {"trials": 3, "space": {"train.optimizer.lr": {"low": 0.0003, "high": 0.01, "log": True}}}
)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    try:
        pg_bin("pg_ctl")
    except ClusterError as missing:
        pytest.skip(f"no Postgres server on this machine: {missing}")
    # pytest's temporary folders are private to root; the postgres user must reach its data folder.
    state = Path(tempfile.mkdtemp(prefix="sweep-postgres-"))
    try:
        state.chmod(0o755)
        (port,) = free_ports(1)
        settings = ClusterSettings.default(Path(__file__).resolve().parents[2], state, postgres_port=port)
        password = "sweep-test"
        try:
            start_postgres(settings, password)
            yield f"postgresql+psycopg2://{DATABASE}:{password}@127.0.0.1:{port}/{DATABASE}"
        finally:
            stop_postgres(settings)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_plan_and_winner_on_postgres(url: str) -> None:
    specs = studies.plan(SWEEP, url, "data-1")
    assert [spec["number"] for spec in specs] == [0, 1, 2]
    study = studies.open_study(SWEEP, url, specs[0]["study"])
    trial = study.trials[0]
    assert trial.state == TrialState.RUNNING
    study.tell(0, 0.91)
    study.tell(1, 0.93)  # trial 2 is left running: its worker died
    again = studies.plan(SWEEP, url, "data-1")
    assert [(s["number"], s["params"]) for s in again] == [(3, specs[2]["params"])]
    study.tell(3, 0.92)
    assert studies.plan(SWEEP, url, "data-1") == []
    assert best(SWEEP, url, specs[0]["study"]) == {"number": 1, "params": specs[1]["params"], "value": 0.93}

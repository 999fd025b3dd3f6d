"""`make run`, `make triton-stop`, `make run` again: the second run's Triton serves the champion its
repository pins, so the gate scores it and the closing report shows it; a server that serves nothing
is one line in the report, never a traceback.

A toy-sized run on the same code path as `make run`: the local server started by devtools (what
`make run`, `make airflow` and `make cluster` start), a push, the gate's scoring of the champion
(stages.gate.score_champion, what the gate task runs) and the closing report
(devtools.local.print_served)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from support import ROOT, free_ports

from devtools.local import print_served
from devtools.toy import build_candidate
from devtools.triton import ensure_triton
from orchestration.params import load_project_params
from pipeline.candidate import GOLDEN_FILE, read_golden
from pipeline.rows import Rows
from serving.client import TritonClient
from serving.loading import wait_unloaded
from serving.push import push_candidate
from serving.server import ServerSettings, stop_server
from serving.settings import ServingSettings
from stages.gate import score_champion

pytestmark = pytest.mark.triton


@pytest.fixture
def params(tmp_path, monkeypatch):
    """The project's params with `serving:` on free ports and a repository of its own."""
    for key in [k for k in os.environ if k.startswith("TRITON_")]:
        monkeypatch.delenv(key)
    http, grpc, metrics = free_ports(3)
    base = load_project_params(ROOT / "params.yaml")
    serving = base.serving.model_copy(
        update={
            "repository": str(tmp_path / "models"),
            "state_dir": str(tmp_path / "state"),
            "http_port": http,
            "grpc_port": grpc,
            "metrics_port": metrics,
            "start_timeout_s": 60.0,
            "retries": 1,
            "backoff_s": 0.1,
        }
    )
    yield base.model_copy(update={"serving": serving})
    stop_server(ServerSettings.from_params(serving))


def test_a_second_run_after_the_server_was_stopped_serves_and_scores_the_champion(params, tmp_path, capsys):
    model = params.export.model_name
    candidate = build_candidate(tmp_path / "candidate", name=model, seed=3)
    golden = read_golden(candidate / GOLDEN_FILE)
    test = Rows(np.asarray(golden.inputs, np.float32), np.asarray(golden.labels))

    ensure_triton(params)  # the first `make run`: its push makes version 1 the champion
    assert push_candidate(candidate, ServingSettings.from_params(params.serving)).version == 1
    stop_server(ServerSettings.from_params(params.serving))  # `make triton-stop`
    print_served(params)  # a closing report while the server is down: said, not raised
    assert "unreachable" in capsys.readouterr().out

    ensure_triton(params)  # the second `make run`
    version, metrics = score_champion(ServingSettings.from_params(params.serving), params.data.classes, model, test)
    assert (version, metrics["accuracy"]) == (1, 1.0)  # the gate scores the restored champion
    print_served(params)
    report = capsys.readouterr().out
    assert f"model {model}: version 1 pinned, ready on the server" in report and "sample prediction" in report
    assert ensure_triton(params).restored == {}  # a running server that serves its pins: nothing reloaded


def test_a_server_that_serves_nothing_is_one_line_in_the_report(params, tmp_path, capsys):
    model = params.export.model_name
    ensure_triton(params)
    settings = ServingSettings.from_params(params.serving)
    push_candidate(build_candidate(tmp_path / "candidate", name=model, seed=4), settings)
    with TritonClient(settings.client) as client:  # what a server restarted without its pins looks like
        client.unload(model)
        wait_unloaded(client, model, 30.0)

    print_served(params)  # the report ended in `ClientError: ... [404] Request for unknown model`
    report = capsys.readouterr().out
    assert f"model {model}: version 1 pinned, NOT ready on the server" in report
    assert "problem: version 1 is pinned but the server does not serve it" in report
    assert "sample prediction" not in report

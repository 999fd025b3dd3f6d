"""The live loop for real: a real Triton keeping every request, a client thread sending digits,
the live drift DAG and the retrain DAG (the project's own files) under Airflow's real scheduler
and triggerer (`airflow standalone` on SQLite). Unshifted traffic starts no retrain; labels that
come back saying the served model is wrong (`serving label`'s store) start one; traffic shifted like
the drift stage's test shift (tests/drift_data.py) makes the retrain DAG get one asset-triggered
run within one check interval.

The served model is a multinomial logistic regression fitted on the digits (softmax(x @ w + b) as
ONNX, the toy candidate's graph with fitted weights), so its answers have the class balance of the
labels, as a trained model's do. The reference is the digits' profile, on the published branch of
the workspace's git remote, where publish keeps it. The retrain run the event starts would retrain
the whole pipeline (minutes): the test stops it once it exists (marks it failed through the REST
API); that the run was created by the asset event is what is checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from drift_data import FEATURES, digits_table, shifted, write
from support import GIT_ENV, local_triton

from devtools.airflow_api import AirflowApi, AirflowApiError
from devtools.toy import build_candidate
from pipeline.drift import profile
from serving.client import ClientSettings, TritonClient
from serving.live.labels import LabelStore
from serving.live.sample import read_sample
from serving.params import SampleParams
from serving.push import push_candidate
from serving.settings import ServingSettings

pytestmark = [pytest.mark.airflow, pytest.mark.triton, pytest.mark.integration]

MODEL = "live_loop_digits"
INTERVAL_S = 30  # between two checks
MIN_ROWS = 200
MIN_LABELS = 100


def fitted_candidate(out: Path) -> Path:
    """The toy candidate with a logistic regression fitted on the digits in place of its random weights."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.linear_model import LogisticRegression

    table = digits_table()
    fit = LogisticRegression(max_iter=300).fit(table[FEATURES].to_numpy(np.float32) / 16.0, table["label"])
    w = (fit.coef_.T / 16.0).astype(np.float32)
    b = fit.intercept_.astype(np.float32)
    build_candidate(out, name=MODEL)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "fitted",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for path in (out / "model.onnx", out / "triton" / MODEL / "1" / "model.onnx"):
        onnx.save(model, str(path))
    golden = json.loads((out / "golden.json").read_text())  # the push's smoke test: this model's answers
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(["probabilities"], {"input": np.asarray(golden["inputs"], dtype=np.float32)})
    golden.update(outputs=outputs.tolist(), labels=outputs.argmax(axis=1).tolist())
    (out / "golden.json").write_text(json.dumps(golden))
    return out


def configure(project: Path, live: Path) -> None:
    """The copy's params: the sample on, a check every INTERVAL_S, the retrain DAG on the live asset only."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["export"]["model_name"] = MODEL
    params["serving"]["sample"].update(rate=1.0, dir=str(live), rotate_rows=60, rotate_s=0.5)
    params["airflow"].update(schedule=None, data_asset=None)
    params["airflow"]["live_drift"].update(interval_s=INTERVAL_S, min_rows=MIN_ROWS, min_labels=MIN_LABELS)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def publish_reference(project: Path, tmp: Path) -> None:
    """The digits' profile as the published reference, on the workspace remote's branch (what publish does)."""
    made, _ = profile(write(digits_table(), tmp / "clean.parquet"), "label", FEATURES, 10, 20_000)
    remote, work = project / ".airflow" / "workspace.git", tmp / "published"
    work.mkdir()
    (work / "reference").mkdir()
    text = json.dumps({"profile": made.to_json(), "tag": "model-v1"}, indent=2, sort_keys=True)
    (work / "reference" / "profile.json").write_text(text)
    for cmd in (
        ["git", "init", "-q", "--bare", "--initial-branch=main", str(remote)],
        ["git", "init", "-q", "--initial-branch=main"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "model-v1"],
        ["git", "push", "-q", str(remote), "main"],
    ):
        subprocess.run(cmd, cwd=work, env={**os.environ, **GIT_ENV}, check=True, capture_output=True)


class Traffic:
    """A client thread sending 4 digits rows a request, unshifted until `shift` is set."""

    def __init__(self, settings: ServingSettings):
        self.settings, self.shift, self.stop = settings, threading.Event(), threading.Event()
        self.rows = digits_table()
        self.moved = shifted(self.rows)
        self.sent = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with TritonClient(self.settings.client) as client:
            while not self.stop.is_set():
                table = self.moved if self.shift.is_set() else self.rows
                at = (4 * self.sent) % (len(table) - 4)
                batch = table[FEATURES].to_numpy(np.float32)[at : at + 4]
                client.predict(MODEL, batch, request_id=f"live-{self.sent}")
                self.sent += 1
                time.sleep(0.05)


class WrongLabels:
    """A client sending, for every kept row, a label that is not the served model's answer: the
    labels of a model that has gone wrong on live data."""

    def __init__(self, live: Path):
        self.store = LabelStore(live, MODEL, list(range(10)), retention_days=1.0)
        self.live, self.stop, self.sent = live, threading.Event(), set()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            table = read_sample(self.live, MODEL)
            if not table.num_rows:
                continue
            for request_id, row, top in zip(
                *(table[c].to_pylist() for c in ("request_id", "row", "top_class")), strict=True
            ):
                if (request_id, row) not in self.sent:
                    self.store.add(request_id, (top + 1) % 10, row)
                    self.sent.add((request_id, row))


def started_by(api: AirflowApi, source: str) -> list[dict]:
    """The retrain runs whose asset event came from a check that `source` ("accuracy", "drift") decided."""
    found = []
    for run in api.runs("retrain"):
        try:
            path = f"/api/v2/dags/retrain/dagRuns/{api._q(run['dag_run_id'])}/upstreamAssetEvents"
            events = api._request("GET", path)
        except AirflowApiError:  # seen: HTTP 500 for a run the scheduler was creating; asked again at the next poll
            continue
        messages = [(e.get("extra") or {}).get("message", "") for e in events.get("asset_events", [])]
        if any(f"start a retrain: {source}:" in m or f"; {source}:" in m for m in messages):
            found.append(run)
    return found


def stop_runs(api: AirflowApi) -> None:
    """Mark every queued or running retrain run failed: what they would retrain is not under test."""
    for run in api.runs("retrain"):
        if run["state"] in ("queued", "running"):
            api._request("PATCH", f"/api/v2/dags/retrain/dagRuns/{api._q(run['dag_run_id'])}", {"state": "failed"})


@contextlib.contextmanager
def triton(root: Path, live: Path) -> Iterator[ServingSettings]:
    with local_triton(root, SampleParams(rate=1.0, dir=str(live), rotate_rows=60, rotate_s=0.5)) as server:
        client = ClientSettings.local(server, timeout_s=30.0, retries=2, backoff_s=0.2)
        yield ServingSettings(client=client, repository=server.repository, load_timeout_s=60.0, retention=5)


def checks(api: AirflowApi, dag_id: str) -> list[dict]:
    """The finished checks' decisions, oldest first."""
    found = []
    for run in sorted(api.runs(dag_id), key=lambda r: r["data_interval_end"]):
        if run["state"] == "success":
            found.append({"run": run, **api.xcom(dag_id, run["dag_run_id"], "check")})
    return found


def test_unshifted_traffic_starts_no_retrain_wrong_labels_start_one_and_shifted_traffic_one(
    tmp_path: Path, project_copy: Path, helpers, make_airflow_home
) -> None:
    live = tmp_path / "live"
    configure(project_copy, live)
    publish_reference(project_copy, tmp_path)
    api_port, log_port, trigger_log_port = helpers.free_ports(3)
    env = make_airflow_home(
        project_copy / "dags",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(log_port),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_log_port),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(project_copy / "plugins"),
        RETRAIN_PROJECT_DIR=str(project_copy),
    )
    log = tmp_path / "standalone.log"
    with triton(tmp_path / "triton", live) as settings:
        push_candidate(fitted_candidate(tmp_path / "candidate"), settings)
        traffic = Traffic(settings)
        traffic.thread.start()
        try:
            with helpers.standalone_api(env, log, project_copy, api_port, "live_drift") as api:
                helpers.wait_for("the retrain DAG", lambda: api.dag("retrain"), log)
                api.set_paused("retrain", False)
                api.set_paused("live_drift", False)

                # Unshifted traffic: checks that compared enough rows found no drift; nothing started.
                def compared_quietly() -> list[dict]:
                    return [c for c in checks(api, "live_drift") if c["rows"] >= MIN_ROWS]

                quiet = helpers.wait_for(
                    "a check of unshifted traffic", compared_quietly, log, timeout_s=4 * INTERVAL_S + 120, poll_s=2
                )
                assert not quiet[0]["start"] and quiet[0]["metrics"]["status"] == "ok", quiet[0]
                assert api.runs("retrain") == []

                # Labels saying the served model is wrong, traffic unshifted: labelled accuracy starts one.
                labels = WrongLabels(live)
                labels.thread.start()
                try:
                    (wrong_run, *_) = helpers.wait_for(
                        "a retrain run started by labelled accuracy",
                        lambda: started_by(api, "accuracy"),
                        log,
                        timeout_s=2 * INTERVAL_S + 120,
                        poll_s=2,
                    )
                finally:
                    labels.stop.set()
                    labels.thread.join(timeout=30)
                stop_runs(api)
                assert wrong_run["run_type"] == "asset_triggered", wrong_run
                # The check's run is marked done just after its event started the retrain run.
                by_labels = helpers.wait_for(
                    "the check that started it", lambda: [c for c in checks(api, "live_drift") if c["start"]], log
                )[0]
                reasons = {r["source"]: r for r in by_labels["reasons"]}
                assert reasons["accuracy"]["start"] and not reasons["drift"]["start"], by_labels
                assert "accuracy 0.0000 < gate.floors.accuracy" in reasons["accuracy"]["message"]
                # Its Reports: the drift report and the served model over time, in the DVC remote.
                outs = {o["path"]: o["md5"] for o in by_labels["lock"]["live_drift"]["outs"]}
                md5 = outs["reports/live.html"]
                page = (project_copy / ".dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]).read_text()
                assert f"<td>{MODEL}</td><td>1</td>" in page and "<td>0.0000</td>" in page

                traffic.shift.set()
                shifted_at = time.monotonic()

                def by_drift() -> list[dict]:
                    found = started_by(api, "drift")
                    stop_runs(api)  # a later check of the wrong labels' last interval may have started one more
                    return found

                (run,) = helpers.wait_for(
                    "a retrain run started by drift", by_drift, log, timeout_s=2 * INTERVAL_S + 120, poll_s=1
                )
                # The first interval holding only shifted rows ends at most 2 intervals after the shift.
                started_after = time.monotonic() - shifted_at
                stop_runs(api)
                api.set_paused("retrain", True)
                assert run["run_type"] == "asset_triggered", run
                drifted = helpers.wait_for(
                    "the check that found drift",
                    lambda: [c for c in checks(api, "live_drift") if c["start"] and c["metrics"]["status"] == "drift"],
                    log,
                )
                assert drifted and drifted[0]["metrics"]["status"] == "drift", drifted
                assert drifted[0]["metrics"]["drifted_features"] > 0
                assert started_after < 2 * INTERVAL_S + 120, started_after
                assert traffic.sent > 0
        finally:
            traffic.stop.set()
            traffic.thread.join(timeout=30)

"""The live sample on a real local Triton: the server keeps a share of the requests it answers, with
their ids, the version that answered and the answer, as Parquet parts; old parts are deleted; the
project's own requests are never kept; during a rollout each row says which version answered."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from ruamel.yaml import YAML
from serving_traffic import Traffic, true_outputs
from support import free_ports, local_triton

from serving.client import ClientSettings, TritonClient
from serving.live.label_service import send_label
from serving.live.labels import LabelRefused, LabelStore, labelled
from serving.live.sample import ENV_NAMES, ENV_RATE, read_sample, sample_parts, with_sample
from serving.params import SampleParams
from serving.push import push_candidate
from serving.rollout import driver, operations
from serving.rollout.params import AccuracyParams, LatencyParams, RolloutParams
from serving.server import ServerSettings
from serving.settings import ServingSettings

pytestmark = pytest.mark.triton

RATE = 0.5
ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"
ROWS = np.random.default_rng(3).uniform(0, 16, (400, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerSettings]:
    """A server of this module's own, started keeping half of the requests; parts every 0.5 s or
    60 rows, and a retention of one day."""
    root = tmp_path_factory.mktemp("live")
    sample = SampleParams(rate=RATE, dir=str(root / "live"), rotate_rows=60, rotate_s=0.5, retention_days=1.0)
    with local_triton(root, sample) as settings:
        yield settings


@pytest.fixture(scope="module")
def settings(server) -> ServingSettings:
    client = ClientSettings.local(server, timeout_s=30.0, retries=2, backoff_s=0.2)
    return ServingSettings(
        client=client,
        repository=server.repository,
        load_timeout_s=60.0,
        retention=5,
        sample_dir=Path(server.sample.dir),  # the rollout's labelled accuracy reads it
    )


def send(settings: ServingSettings, name: str, prefix: str, n: int) -> dict[str, np.ndarray]:
    """n requests of 2 rows each, ids `<prefix><i>`; what each was answered."""
    answers = {}
    with TritonClient(settings.client) as client:
        for i in range(n):
            rows = ROWS[(2 * i) % len(ROWS) : (2 * i) % len(ROWS) + 2]
            answers[f"{prefix}{i}"] = client.predict(name, rows, request_id=f"{prefix}{i}")
    return answers


def kept(folder: Path, name: str, ids: set[str], timeout_s: float = 20.0) -> pa.Table:
    """The kept rows of `ids` once the server has written them all (a part at most 0.5 s later)."""
    deadline = time.monotonic() + timeout_s
    previous = -1
    while True:
        table = read_sample(folder, name)
        rows = table.filter(pc.is_in(table["request_id"], pa.array(sorted(ids)))) if table.num_rows else table
        if rows.num_rows == previous or time.monotonic() > deadline:  # two reads 1 s apart agree
            return rows
        previous = rows.num_rows
        time.sleep(1.0)


def test_half_the_requests_are_kept_with_their_id_version_inputs_and_answer(server, settings, make_candidate):
    name = "live_digits"
    candidate = make_candidate(name=name, seed=11)
    push_candidate(candidate, settings)  # its smoke test's requests are the project's own: not kept
    answers = send(settings, name, "req-", 300)
    folder = Path(server.sample.dir)
    table = kept(folder, name, set(answers))

    ids = set(table["request_id"].to_pylist())
    # Each request is kept with probability 1/2: 300 requests give 150 +- 8.7 (5 sigma: 107..193).
    assert 107 <= len(ids) <= 193, len(ids)
    assert table.num_rows == 2 * len(ids)  # every row of a kept request
    assert set(read_sample(folder, name)["request_id"].to_pylist()) == ids  # nothing else: no smoke test rows
    assert set(table["model"].to_pylist()) == {name} and set(table["version"].to_pylist()) == {1}
    now = time.time()
    for record in table.to_pylist():
        i = int(record["request_id"].removeprefix("req-"))
        sent = ROWS[(2 * i) % len(ROWS) + record["row"]]
        np.testing.assert_array_equal(np.asarray(record["input"], dtype=np.float32), sent)
        answer = answers[record["request_id"]][record["row"]]
        np.testing.assert_allclose(record["probabilities"], answer, atol=1e-6)
        assert record["top_class"] == int(np.argmax(answer))
        assert now - 120 < record["time"].timestamp() <= now
    assert len(sample_parts(folder, name)) >= 2  # rotated: at most 60 rows wait for a part


def test_parts_older_than_the_retention_are_deleted_at_the_next_write(server, settings, make_candidate):
    name = "live_retention"
    folder = Path(server.sample.dir) / name
    folder.mkdir(parents=True)
    old, recent = folder / "part-old.parquet", folder / "part-recent.parquet"
    for part in (old, recent):
        pq.write_table(pa.table({"request_id": ["x"]}), part)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    push_candidate(make_candidate(name=name, seed=12), settings)
    send(settings, name, "r-", 40)
    deadline = time.monotonic() + 20
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not old.exists()  # older than retention_days (1): deleted
    assert recent.exists()  # within it: kept


def test_during_a_canary_each_row_names_the_version_that_answered(server, settings, make_candidate):
    name = "live_canary"
    champion = make_candidate(name=name, seed=13)
    candidate = make_candidate(name=name, seed=14)  # other weights: answers tell the versions apart
    push_candidate(champion, settings)
    params = RolloutParams(mode="canary", canary_steps=[50.0], poll_s=0.3, min_requests=10**6, max_requests=10**7)
    started = operations.start_rollout(candidate, settings, params)
    assert started.state is not None
    try:
        answers = send(settings, name, "c-", 200)
    finally:
        operations.roll_back(settings, name, "test", "the test is over")
    folder = Path(server.sample.dir)
    tables = {role: kept(folder, f"{name}.{role}", set(answers)) for role in ("champion", "candidate")}
    assert {r: set(t["version"].to_pylist()) for r, t in tables.items()} == {"champion": {1}, "candidate": {2}}
    ids = {role: set(t["request_id"].to_pylist()) for role, t in tables.items()}
    assert ids["champion"] and ids["candidate"] and not ids["champion"] & ids["candidate"]
    assert 65 <= len(ids["champion"] | ids["candidate"]) <= 135  # half of 200 +- 7.1, 5 sigma
    for role, folder_of in (("champion", champion), ("candidate", candidate)):
        table = tables[role]
        for record in table.to_pylist()[:20]:  # the rows the version really answered
            i = int(record["request_id"].removeprefix("c-"))
            sent = ROWS[(2 * i) % len(ROWS) + record["row"]][None, :]
            np.testing.assert_allclose(record["probabilities"], true_outputs(folder_of, sent)[0], atol=1e-5)


def test_rate_zero_starts_a_server_that_keeps_nothing_even_with_the_variables_inherited():
    inherited = {ENV_RATE: "1.0", "PATH": "/bin"}
    assert with_sample(inherited, SampleParams()) == {"PATH": "/bin"}
    on = with_sample(inherited, SampleParams(rate=0.25, dir="live"))
    assert on[ENV_RATE] == "0.25" and set(ENV_NAMES) <= set(on) and Path(on["LIVE_SAMPLE_DIR"]).is_absolute()


# --- labels that come back later ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def label_service(server, tmp_path_factory) -> Iterator[tuple[Path, str, subprocess.Popen]]:
    """`python -m serving labels serve` as a process of its own, over this module's sample; returns
    (its params file, its URL, its process). Its key file is made at its first start."""
    root = tmp_path_factory.mktemp("labels")
    params = YAML().load(PARAMS.read_text())
    params["serving"]["sample"]["dir"] = server.sample.dir
    params["serving"]["state_dir"] = str(root / "state")
    params["serving"]["labels"]["port"] = free_ports(1)[0]
    path = root / "params.yaml"
    YAML().dump(params, path)
    url = f"http://127.0.0.1:{params['serving']['labels']['port']}"
    process = start_label_service(path, url)
    try:
        yield path, url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def start_label_service(params: Path, url: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "serving", "--params", str(params), "labels", "serve"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("the label service did not answer within 60 s")


def refused(url: str, key: str, **label) -> tuple[int, str]:
    with pytest.raises(LabelRefused) as caught:
        send_label(url, key, **label)
    return caught.value.status, str(caught.value)


def test_labels_are_refused_with_a_reason_and_kept_across_a_restart(server, settings, make_candidate, label_service):
    params, url, process = label_service
    name = "live_labels"
    push_candidate(make_candidate(name=name, seed=15), settings)
    answers = send(settings, name, "l-", 120)
    table = kept(Path(server.sample.dir), name, set(answers))
    ids = sorted(set(table["request_id"].to_pylist()))
    assert len(ids) >= 10
    key = (params.parent / "state" / "labels.key").read_text().strip()  # made 0600 at the first start
    assert oct((params.parent / "state" / "labels.key").stat().st_mode & 0o777) == "0o600"

    # Through the CLI, as a client would: the true class of the first row of a kept request.
    first = ids[0]
    truth = int(np.argmax(answers[first][0]))
    cli = [sys.executable, "-m", "serving", "--params", str(params), "--json", "label"]
    done = subprocess.run(
        [*cli, "--model", name, "--request-id", first, "--label", str(truth)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["label"]["label"] == str(truth)

    # Refused, each with its reason.
    assert refused(url, key, model=name, request_id=first, label=truth)[0] == 409  # labelled already
    status, reason = refused(url, key, model=name, request_id="never-sent", label=1)
    assert status == 404 and "not in live_labels's live sample" in reason
    status, reason = refused(url, key, model=name, request_id=ids[1], label="cat")
    assert status == 422 and "not one of data.classes" in reason
    assert refused(url, key, model=name, request_id=ids[1], label=1, row=2)[0] == 422  # requests had 2 rows
    assert refused(url, "wrong-key", model=name, request_id=ids[1], label=1)[0] == 401
    failed = subprocess.run(
        [*cli, "--model", name, "--request-id", "never-sent", "--label", "1"], cwd=ROOT, capture_output=True, text=True
    )
    assert failed.returncode == 1 and "not in live_labels's live sample" in failed.stderr

    # The rest of the kept requests: a wrong label on every third one.
    wrong = set(ids[1::3])
    for request_id in ids[1:]:
        top = int(np.argmax(answers[request_id][0]))
        send_label(url, key, name, request_id, (top + 1) % 10 if request_id in wrong else top)

    # A restart loses nothing: the labels are there, and a duplicate is still refused.
    process.terminate()
    process.wait(timeout=30)
    restarted = start_label_service(params, url)
    try:
        assert refused(url, key, model=name, request_id=first, label=truth)[0] == 409
        joined = labelled(Path(server.sample.dir), name)
        assert joined.num_rows == len(ids)  # one labelled row per kept request
        assert set(joined["version"].to_pylist()) == {1}
        correct = dict(zip(joined["request_id"].to_pylist(), joined["correct"].to_pylist(), strict=True))
        assert {i for i, ok in correct.items() if not ok} == wrong
        # The report over time: one day, version 1, the accuracy the labels give.
        out = params.parent / "live.html"
        shown = subprocess.run(
            [*cli[:-1], "live-report", "--model", name, "--out", str(out), "--json-out", str(out.with_suffix(".json"))],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert shown.returncode == 0, shown.stderr
        (row,) = json.loads(shown.stdout.splitlines()[-1])["rows"]
        assert (row["version"], row["labelled"]) == (1, len(ids))
        assert row["accuracy"] == pytest.approx(1 - len(wrong) / len(ids))
        assert sum(map(sum, row["confusion"])) == len(ids) and f"{row['accuracy']:.4f}" in out.read_text()
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)


class Labeller(threading.Thread):
    """Sends the true class (the champion's answer) of every kept row of a rollout's versions, as
    a client that learns the truth a little later would; until stopped."""

    def __init__(self, folder: Path, name: str, traffic: Traffic, truth: Path):
        super().__init__(daemon=True)
        self.folder, self.name, self.traffic = folder, name, traffic
        self.truth = [np.argmax(true_outputs(truth, chunk), axis=1) for chunk in traffic.chunks]
        self.store = LabelStore(folder, name, list(range(10)), retention_days=1.0)
        self.sent: set[tuple[str, int]] = set()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.3):
            for role in ("champion", "candidate"):
                table = read_sample(self.folder, f"{self.name}.{role}")
                if not table.num_rows:
                    continue
                for request_id, row in zip(table["request_id"].to_pylist(), table["row"].to_pylist(), strict=True):
                    if (request_id, row) in self.sent:
                        continue
                    n = int(request_id.removeprefix("t-"))
                    with contextlib.suppress(LabelRefused):  # kept by both versions (shadow): labelled once
                        self.store.add(request_id, int(self.truth[n % len(self.truth)][row]), row)
                    self.sent.add((request_id, row))


def test_a_canary_wrong_on_one_class_is_rolled_back_on_labelled_accuracy(server, settings, make_candidate):
    name = "live_accuracy"
    champion = make_candidate(name=name, seed=16)
    wrong = make_candidate(name=name, seed=16, shuffled_class=3)  # same failures and speed, wrong on class 3
    push_candidate(champion, settings)
    accuracy = AccuracyParams(min_labels=40, margin=0.02)
    params = RolloutParams(
        mode="canary",
        canary_steps=[50.0],  # even: both versions equally busy (test_rollout_live.py says why)
        poll_s=0.3,
        min_requests=50,
        max_requests=20000,
        latency=LatencyParams(margin=1.0),  # this machine's margin (test_rollout_live.py)
        accuracy=accuracy,
    )
    traffic = Traffic(settings.client, name, {"champion": champion, "wrong": wrong}, rows=ROWS, id_prefix="t-")
    with traffic:
        labeller = Labeller(Path(server.sample.dir), name, traffic, champion)
        labeller.start()
        try:
            operations.start_rollout(wrong, settings, params)
            final = driver.watch(settings, name, poll_s=params.poll_s)
        finally:
            labeller.stopped.set()
            labeller.join(timeout=30)
    tests = {t["signal"]: t for t in final.last["test"]["tests"]}
    assert (final.status, final.decided_by) == ("rolled back", "test"), final.reason
    assert tests["accuracy"]["state"] == "fail", final.reason
    assert tests["accuracy"]["n"] >= accuracy.min_labels and tests["accuracy"]["k"] > 0

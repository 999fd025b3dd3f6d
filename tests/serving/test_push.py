"""Push, verify, promote, roll back against a real local Triton (one server for the session)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from serving.client import ClientSettings, TritonClient
from serving.push import PushError, ServingSettings, push_candidate, rollback, serving_status
from serving.repository import RepositoryError, TritonRepository, load_candidate


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes): 'the repository is as it was'."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def golden(candidate: Path) -> dict:
    return json.loads((candidate / "golden.json").read_text())


def answers_like(settings: ServingSettings, name: str, candidate: Path) -> bool:
    data = golden(candidate)
    with TritonClient(settings.client) as client:
        got = client.predict(name, np.asarray(data["inputs"], dtype=np.float32))
    return bool(np.allclose(got, np.asarray(data["outputs"]), atol=1e-4))


@pytest.mark.triton
def test_push_smoke_and_status(serving_settings, make_candidate, tmp_path):
    candidate = make_candidate(name="alpha", seed=1)
    metrics = tmp_path / "evaluate.json"
    metrics.write_text(json.dumps({"accuracy": 0.975, "macro_f1": 0.974}))

    result = push_candidate(candidate, serving_settings, metrics=metrics)

    assert (result.status, result.version, result.serving, result.previous) == ("pushed", 1, 1, None)
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    assert answers_like(serving_settings, "alpha", candidate)
    status = serving_status(serving_settings, "alpha")
    assert status.server.startswith("ready")
    (model,) = status.models
    assert (model.serving, model.live_ready) == (1, True)
    (v1,) = model.versions
    assert (v1.version, v1.serving, v1.state) == (1, True, "READY")
    assert v1.git_commit == f"{1:040x}" and v1.data["clean"]["md5"] == f"{1:032x}"
    assert v1.metrics["evaluate"]["accuracy"] == 0.975 and v1.metrics["val_accuracy"] == 0.9
    assert v1.content_hash


@pytest.mark.triton
def test_repush_of_the_same_artifact_pushes_nothing(serving_settings, make_candidate):
    first = push_candidate(make_candidate(name="twice", seed=2), serving_settings)
    before = tree(serving_settings.repository / "twice")

    again = push_candidate(make_candidate(name="twice", seed=2), serving_settings)  # same content, new folder

    assert first.version == 1
    assert (again.status, again.version, again.serving) == ("unchanged", 1, 1)
    assert TritonRepository(serving_settings.repository).versions("twice") == [1]
    assert tree(serving_settings.repository / "twice") == before


@pytest.mark.triton
@pytest.mark.parametrize("broken", ["load", "outputs"])
def test_broken_candidate_is_rolled_back(serving_settings, make_candidate, broken):
    name = f"broken_{broken}"
    good = make_candidate(name=name, seed=3)
    push_candidate(good, serving_settings)
    before = tree(serving_settings.repository / name)

    with pytest.raises(PushError) as failure:
        push_candidate(make_candidate(name=name, seed=4, broken=broken), serving_settings)

    message = str(failure.value)
    assert "version 2" in message and f"version 1 of {name} is serving" in message
    assert ("deliberately broken" in message) if broken == "load" else ("smoke test" in message)
    assert tree(serving_settings.repository / name) == before  # the repository is as it was
    assert answers_like(serving_settings, name, good)  # and the old version keeps answering
    assert serving_status(serving_settings, name).models[0].live_ready is True
    with TritonClient(serving_settings.client) as client:
        assert client.is_ready()  # no failed version left behind to fail strict readiness


@pytest.mark.parametrize("bad_name", ["../x", "a/b", "", ".hidden", "x y", None])
def test_path_traversal_name_is_rejected_before_any_write(make_candidate, tmp_path, bad_name):
    candidate = make_candidate(name="fine", seed=5)
    card = golden(candidate) | {"model_name": bad_name}
    (candidate / "golden.json").write_text(json.dumps(card))
    # No server behind this URL: the name check must come first.
    settings = ServingSettings(client=ClientSettings(url="127.0.0.1:9", retries=0), repository=tmp_path / "repo")

    with pytest.raises(RepositoryError, match="invalid model name"):
        push_candidate(candidate, settings)

    assert not (tmp_path / "repo").exists() and not (tmp_path / "x").exists()


def test_server_down_fails_after_bounded_retries(make_candidate, tmp_path, unused_port):
    port = unused_port  # nothing listens here
    client = ClientSettings(url=f"127.0.0.1:{port}", retries=2, backoff_s=0.05, timeout_s=2.0)
    settings = ServingSettings(client=client, repository=tmp_path / "repo")

    started = time.monotonic()
    with pytest.raises(PushError) as failure:
        push_candidate(make_candidate(name="down", seed=6), settings)

    message = str(failure.value)
    assert "no Triton server answered" in message and "after 3 tries" in message
    assert "Nothing was written" in message and "has no serving version" in message
    assert time.monotonic() - started < 10
    assert not (tmp_path / "repo" / "down").exists()


class ClientLoop(threading.Thread):
    """Sends inference requests (any version) until stopped; counts successes and failures."""

    def __init__(self, settings: ClientSettings, name: str, rows: np.ndarray, limit_s: float = 120.0):
        super().__init__(daemon=True)
        self.settings, self.name, self.rows, self.limit_s = settings, name, rows, limit_s
        self.stop = threading.Event()
        self.ok, self.failures = 0, []

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_s  # bounded even if the test forgets to stop it
        with TritonClient(dataclasses.replace(self.settings, retries=0)) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    client.predict(self.name, self.rows)
                    self.ok += 1
                except Exception as error:  # every failure counts, whatever its type
                    self.failures.append(repr(error))


@pytest.mark.triton
def test_zero_downtime_during_push(serving_settings, make_candidate):
    push_candidate(make_candidate(name="busy", seed=7), serving_settings)
    rows = np.asarray(golden(make_candidate(name="busy", seed=7))["inputs"], dtype=np.float32)
    loop = ClientLoop(serving_settings.client, "busy", rows)
    loop.start()
    try:
        time.sleep(0.3)
        result = push_candidate(make_candidate(name="busy", seed=8), serving_settings)
        with pytest.raises(PushError):  # a failed push must not drop requests either
            push_candidate(make_candidate(name="busy", seed=9, broken="load"), serving_settings)
        time.sleep(0.3)
    finally:
        loop.stop.set()
        loop.join(timeout=30)
    timings = " ".join(f"{k}={v:.2f}s" for k, v in result.seconds.items())
    print(f"push approved->serving: {timings}; requests ok {loop.ok}, failed {len(loop.failures)}")
    assert result.version == 2
    assert loop.failures == []
    assert loop.ok > 10


@pytest.mark.triton
def test_rollback_to_previous_and_to_a_chosen_version(serving_settings, make_candidate):
    first, second = make_candidate(name="back", seed=10), make_candidate(name="back", seed=11)
    push_candidate(first, serving_settings)
    push_candidate(second, serving_settings)

    back = rollback("back", serving_settings)
    assert (back.version, back.previous) == (1, 2)
    assert answers_like(serving_settings, "back", first)
    assert TritonRepository(serving_settings.repository).serving_version("back") == 1

    forward = rollback("back", serving_settings, to=2)
    assert forward.version == 2 and answers_like(serving_settings, "back", second)

    with pytest.raises(PushError, match="not stored"):
        rollback("back", serving_settings, to=7)
    assert answers_like(serving_settings, "back", second)


@pytest.mark.triton
def test_push_prunes_beyond_retention(serving_settings, make_candidate):
    settings = dataclasses.replace(serving_settings, retention=1)
    repo = TritonRepository(settings.repository)
    for version, seed in ((1, 20), (2, 21)):  # two stored versions, 2 serving (as after two pushes)
        candidate = load_candidate(make_candidate(name="keep", seed=seed))
        repo.write_version(candidate, version, {"serving": {"content_hash": candidate.digest}})
    repo.pin("keep", 2)

    result = push_candidate(make_candidate(name="keep", seed=22), settings)

    # retention 1 keeps the newest (3, now serving) and its predecessor (2).
    assert (result.version, result.pruned) == (3, [1])
    assert repo.versions("keep") == [2, 3]

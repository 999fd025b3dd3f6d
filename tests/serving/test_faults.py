"""The fault matrix: every way a push or rollback can go wrong, against a real local Triton, while a
client thread sends unversioned requests the whole time.

In every case: 0 failed requests (except while the server itself is down), 0 wrong answers (each
answer comes from a version that was verified when it answered), the right version serving
afterwards, no half-written or temporary folder left, and `status` telling the truth.
Run with `-s` to see the request counts of each case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_traffic import Traffic
from support import free_ports

from pipeline.candidate import CARD_FILE
from serving import control, loading, transaction
from serving.client import ClientSettings, TritonClient
from serving.errors import PushError
from serving.push import push_candidate, rollback
from serving.repository import TritonRepository
from serving.server import ServerSettings, read_pid, stop_server
from serving.settings import ServingSettings
from serving.startup import start_local_server
from serving.status import serving_status

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerSettings]:
    """A server of this module's own: one case kills it."""
    root = tmp_path_factory.mktemp("faults")
    http, grpc, metrics = free_ports(3)
    # One key for the module, as an operator sets TRITON_CONTROL_KEY: a restart keeps it, so the
    # clients made before the kill can still control the restarted server.
    settings = ServerSettings(
        root / "models", root / "state", http, grpc, metrics, start_timeout_s=60.0, control_key=control.new_key()
    )
    start_local_server(settings)
    try:
        yield settings
    finally:
        stop_server(settings)


@pytest.fixture(scope="module")
def settings(server) -> ServingSettings:
    client = ClientSettings.local(server, timeout_s=30.0, retries=2, backoff_s=0.2)
    return ServingSettings(client=client, repository=server.repository, load_timeout_s=60.0, retention=5)


def served(settings: ServingSettings, name: str) -> list[int]:
    with TritonClient(settings.client) as client:
        return loading.served_versions(client, name)


def assert_outcome(
    settings: ServingSettings,
    traffic: Traffic,
    name: str,
    serving: int,
    *,
    wrong: tuple[str, ...],
    down: list[tuple[float, float]] = (),  # type: ignore[assignment]
) -> None:
    """The five promises, for model `name` that should serve version `serving` now."""
    print(f"\n  {name}: {traffic.summary()}, of which while the server was down {len(traffic.failures)}")
    assert traffic.failures_outside(list(down)) == []
    assert traffic.answers["unknown"] == 0 and all(traffic.answers[label] == 0 for label in wrong)
    assert traffic.answers.total() > 10
    assert served(settings, name) == [serving]
    repo = TritonRepository(settings.repository)
    folder = Path(settings.repository) / name
    assert sorted(p.name for p in folder.rglob(".*") if p.is_dir()) == []  # no temporary or half-removed folder
    for version in repo.versions(name):
        assert (folder / str(version) / CARD_FILE).is_file()  # every version folder is whole
    status = serving_status(settings, name).models[0]
    assert (status.serving, status.live_versions, status.live_ready, status.problem) == (serving, [serving], True, None)
    assert [v.version for v in status.versions if v.state == "READY"] == [serving]
    assert not [v.version for v in status.versions if v.state not in ("READY", "unloaded", "-")]
    assert [v.version for v in status.versions if v.serving] == [serving]


def test_a_broken_model(settings, make_candidate):
    name = "f_broken"
    good, broken = make_candidate(name=name, seed=1), make_candidate(name=name, seed=2, broken="load")
    push_candidate(good, settings)
    with Traffic(settings.client, name, {"good": good}) as traffic, pytest.raises(PushError, match="deliberately"):
        push_candidate(broken, settings)
    assert_outcome(settings, traffic, name, 1, wrong=())
    assert TritonRepository(settings.repository).versions(name) == [1]


def test_a_model_that_loads_but_answers_wrong(settings, make_candidate):
    name = "f_wrong"
    good, wrong = make_candidate(name=name, seed=3), make_candidate(name=name, seed=4, broken="outputs")
    push_candidate(good, settings)
    with Traffic(settings.client, name, {"good": good, "wrong": wrong}) as traffic:
        for _ in range(2):
            with pytest.raises(PushError, match="smoke test"):
                push_candidate(wrong, settings)
    assert_outcome(settings, traffic, name, 1, wrong=("wrong",))
    assert TritonRepository(settings.repository).versions(name) == [1]


def test_an_interrupt_in_the_middle_of_the_switch(settings, make_candidate, monkeypatch):
    name = "f_interrupt"
    first, second = make_candidate(name=name, seed=5), make_candidate(name=name, seed=6)
    push_candidate(first, settings)
    real_wait = transaction.wait_unloaded
    interrupts = ["interrupted in the switch"]

    def interrupted(*args, **kwargs):  # the switch loaded the new version; the old one is unloading
        if interrupts:
            raise KeyboardInterrupt(interrupts.pop())
        return real_wait(*args, **kwargs)

    with Traffic(settings.client, name, {"first": first, "second": second}) as traffic:
        monkeypatch.setattr(transaction, "wait_unloaded", interrupted)
        with pytest.raises(KeyboardInterrupt):
            push_candidate(second, settings)
    # "second" passed its staging check before the switch, so its answers are not wrong ones.
    assert_outcome(settings, traffic, name, 1, wrong=())
    assert TritonRepository(settings.repository).versions(name) == [1]
    assert push_candidate(second, settings).status == "pushed"  # a retry really pushes
    assert served(settings, name) == [2]


def _kill(server: ServerSettings) -> None:
    pid = read_pid(server)
    assert pid is not None
    # The whole process group, as a crashed host or container loses it: the Python backend's
    # stub processes too, which a SIGKILL of the server alone leaves running as orphans.
    assert os.getpgid(pid) == pid, "the server leads a process group of its own"
    os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # our own child: reap it, so that it is gone for good


def test_the_server_killed_during_a_push_then_restarted(server, settings, make_candidate, monkeypatch):
    name = "f_killed"
    first, second = make_candidate(name=name, seed=7), make_candidate(name=name, seed=8)
    push_candidate(first, settings)
    real_load = transaction.load_stored
    down: list[float] = []

    def kill_at_the_switch(client, repo, model, version, timeout_s, files=None, as_name=None):
        if model == name and version == 2 and as_name is None and not down:  # the switch, not the staging load
            down.append(time.monotonic())
            _kill(server)
        return real_load(client, repo, model, version, timeout_s, files, as_name)

    quick = dataclasses.replace(settings, client=dataclasses.replace(settings.client, retries=1))
    with Traffic(settings.client, name, {"first": first, "second": second}) as traffic:
        monkeypatch.setattr(transaction, "load_stored", kill_at_the_switch)
        with pytest.raises(PushError, match="the server did not confirm it serves"):
            push_candidate(second, quick)
        monkeypatch.setattr(transaction, "load_stored", real_load)
        start_local_server(server)  # what `python -m serving start` does: start, then load the pinned versions
        down.append(time.monotonic())
    assert len(down) == 2  # the server really went down in the switch
    assert_outcome(settings, traffic, name, 1, wrong=("second",), down=[(down[0], down[1])])
    status = serving_status(settings, name).models[0]
    # The new version was written whole but never verified on a live server: status says so,
    # and the retry serves it under its number.
    assert {v.version: v.verdict for v in status.versions} == {1: "serving", 2: "unverified"}
    retry = push_candidate(second, settings)
    assert (retry.status, retry.version) == ("pushed", 2) and served(settings, name) == [2]


def test_a_rollback_after_a_rejected_version(settings, make_candidate):
    name = "f_rollback"
    a, b, c, d = (make_candidate(name=name, seed=seed) for seed in (9, 10, 11, 12))
    for candidate in (a, b, c):
        push_candidate(candidate, settings)
    rollback(name, settings)  # 3 is rejected; 2 serves
    assert push_candidate(d, settings).pruned == [3]  # 4 serves; the rejected 3 is pruned first
    with Traffic(settings.client, name, {"b": b, "c": c, "d": d}) as traffic:
        back = rollback(name, settings)
    assert (back.version, back.previous) == (2, 4)
    assert_outcome(settings, traffic, name, 2, wrong=("c",))
    verdicts = {v.version: v.verdict for v in serving_status(settings, name).models[0].versions}
    assert verdicts == {1: "verified", 2: "serving", 4: "rejected"}

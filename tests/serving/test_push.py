"""Push, verify, promote, roll back against a real local Triton (one server for the session)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from airflow.sdk.exceptions import AirflowTaskTerminated, AirflowTaskTimeout
from serving_traffic import Traffic
from support import ROOT, S3_ENV, free_ports, moto_s3

from pipeline.candidate import ModelCard, ServedRecord
from pipeline.params import ParamsError
from serving import loading
from serving.client import ClientSettings, TritonClient
from serving.errors import PushError
from serving.params import ServingParams
from serving.push import prune_versions, push_candidate, rollback
from serving.repository import RepositoryError, TritonRepository, config_json, load_candidate, pin_versions
from serving.server import ServerSettings, stop_server
from serving.settings import ServingSettings
from serving.startup import start_local_server
from serving.status import serving_status


def stored_card(candidate, version: int) -> ModelCard:
    """The card a push stores with a version (its content hash recorded), for versions written by hand."""
    served = ServedRecord(version=version, content_hash=candidate.digest, entry="triton", pushed_at="-", candidate="-")
    return ModelCard(model_name=candidate.name, serving=served)


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

    # a name that is no string at all fails golden.json's schema, naming the key
    with pytest.raises(RepositoryError, match="invalid model name" if bad_name is not None else "model_name"):
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


@pytest.mark.triton
def test_zero_downtime_during_push(serving_settings, make_candidate):
    first, second = make_candidate(name="busy", seed=7), make_candidate(name="busy", seed=8)
    broken = make_candidate(name="busy", seed=9, broken="load")
    push_candidate(first, serving_settings)
    with Traffic(serving_settings.client, "busy", {"first": first, "second": second}) as traffic:
        result = push_candidate(second, serving_settings)
        with pytest.raises(PushError):  # a failed push must not drop requests either
            push_candidate(broken, serving_settings)
    timings = " ".join(f"{k}={v:.2f}s" for k, v in result.seconds.items())
    print(f"push approved->serving: {timings}; {traffic.summary()}")
    assert result.version == 2
    assert traffic.failures == [] and traffic.answers["unknown"] == 0
    assert traffic.answers["second"] > 0  # it ends on the new version


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
        repo.write_version(candidate, version, stored_card(candidate, version))
    repo.pin("keep", 2)

    result = push_candidate(make_candidate(name="keep", seed=22), settings)

    # retention 1 keeps 3 (now serving) and 2 (served before it: the rollback target); 1 never served.
    assert (result.version, result.pruned) == (3, [1])
    assert repo.versions("keep") == [2, 3]


# --- what the issue found: each failed before the fix ------------------------------------------
def served(settings: ServingSettings, name: str) -> list[int]:
    """What the server has READY for `name`, asked from the server."""
    with TritonClient(settings.client) as client:
        return sorted(
            int(e["version"]) for e in client.repository_index() if e.get("name") == name and e.get("state") == "READY"
        )


def hidden_entries(root: Path) -> list[str]:
    """Temporary or half-removed folders (dot-named) anywhere under a local repository."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*") if p.is_dir())


@pytest.mark.triton
def test_a_candidate_that_fails_its_smoke_test_answers_no_request(serving_settings, make_candidate):
    name = "permuted"
    good = make_candidate(name=name, seed=30)
    wrong = make_candidate(name=name, seed=31, broken="outputs")  # loads and answers, but not as golden.json says
    push_candidate(good, serving_settings)

    with Traffic(serving_settings.client, name, {"good": good, "wrong": wrong}) as traffic:
        for _ in range(3):
            with pytest.raises(PushError, match="smoke test"):
                push_candidate(wrong, serving_settings)

    print(f"3 rejected pushes under traffic: {traffic.summary()}")
    assert traffic.answers["wrong"] == 0 and traffic.answers["unknown"] == 0
    assert traffic.failures == [] and traffic.answers["good"] > 0
    assert served(serving_settings, name) == [1]


@pytest.mark.triton
@pytest.mark.parametrize(
    ("interrupt", "where"),
    [
        (KeyboardInterrupt, "after the load"),
        (AirflowTaskTimeout, "after the load"),
        (AirflowTaskTerminated, "after the load"),
        (AirflowTaskTimeout, "at the pin"),
    ],
)
def test_an_interrupted_push_leaves_the_verified_version_serving(
    serving_settings, make_candidate, monkeypatch, interrupt, where
):
    name = f"cut_{interrupt.__name__}_{where.split()[-1]}"
    first, second = make_candidate(name=name, seed=40), make_candidate(name=name, seed=41)
    push_candidate(first, serving_settings)

    def cut(*args, **kwargs):
        raise interrupt("cut off")

    with monkeypatch.context() as patch:
        if where == "after the load":  # the first wait after a load of the new version (in staging)
            patch.setattr(loading, "wait_version_ready", cut)
        else:
            patch.setattr(TritonRepository, "pin", cut)
        with (
            Traffic(serving_settings.client, name, {"first": first, "second": second}) as traffic,
            pytest.raises(interrupt),
        ):
            push_candidate(second, serving_settings)

    print(f"{interrupt.__name__} {where}: {traffic.summary()}")
    assert traffic.failures == [] and traffic.answers["unknown"] == 0
    if where == "after the load":  # cut off before its smoke test: it must never have answered
        assert traffic.answers["second"] == 0
    assert served(serving_settings, name) == [1]
    repo = TritonRepository(serving_settings.repository)
    assert repo.versions(name) == [1] and repo.serving_version(name) == 1
    assert hidden_entries(Path(serving_settings.repository) / name) == []
    # The retry (Airflow's, after a timeout) pushes for real: not "unchanged".
    retry = push_candidate(second, serving_settings)
    assert (retry.status, retry.version, retry.serving) == ("pushed", 2, 2)
    assert served(serving_settings, name) == [2] and answers_like(serving_settings, name, second)


@pytest.mark.triton
def test_an_oserror_from_the_pin_rolls_back(serving_settings, make_candidate, monkeypatch):
    name = "pin_oserror"
    first, second = make_candidate(name=name, seed=42), make_candidate(name=name, seed=43)
    push_candidate(first, serving_settings)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "config.pbtxt")

    with monkeypatch.context() as patch:
        patch.setattr(TritonRepository, "pin", read_only)
        with pytest.raises(PermissionError):
            push_candidate(second, serving_settings)

    assert served(serving_settings, name) == [1] and answers_like(serving_settings, name, first)
    assert TritonRepository(serving_settings.repository).versions(name) == [1]


@pytest.mark.triton
def test_a_retry_after_a_push_killed_mid_switch_does_not_call_it_unchanged(serving_settings, make_candidate):
    # What a worker killed by SIGKILL mid-push leaves (no undo ran): version 2 stored but never
    # verified, loaded beside 1, so unversioned requests reach it.
    name = "killed"
    first, second = make_candidate(name=name, seed=44), make_candidate(name=name, seed=45)
    push_candidate(first, serving_settings)
    repo = TritonRepository(serving_settings.repository)
    candidate = load_candidate(second)
    repo.write_version(candidate, 2, stored_card(candidate, 2))
    config = pin_versions(repo.version_config(name, 2), [1, 2])
    with TritonClient(serving_settings.client) as client:
        client.load(name, config_json(config))
    assert served(serving_settings, name) == [1, 2]

    retry = push_candidate(second, serving_settings)

    assert (retry.status, retry.version, retry.serving, retry.previous) == ("pushed", 2, 2, 1)
    assert served(serving_settings, name) == [2] and answers_like(serving_settings, name, second)
    assert repo.history(name).was_pinned(2)


@pytest.mark.triton
def test_a_candidate_equal_to_an_older_version_serves_again(serving_settings, make_candidate):
    name = "again"
    first, second = make_candidate(name=name, seed=46), make_candidate(name=name, seed=47)
    push_candidate(first, serving_settings)
    push_candidate(second, serving_settings)

    back = push_candidate(make_candidate(name=name, seed=46), serving_settings)  # version 1's content

    assert (back.status, back.version, back.serving, back.previous) == ("pushed", 1, 1, 2)
    assert served(serving_settings, name) == [1] and answers_like(serving_settings, name, first)
    assert push_candidate(make_candidate(name=name, seed=46), serving_settings).status == "unchanged"


@pytest.mark.triton
def test_a_repository_that_does_not_hold_what_the_server_serves_is_refused(serving_settings, make_candidate, tmp_path):
    # The CLI run from another directory, or a worker without the mount: the local view is empty.
    name = "elsewhere"
    first = make_candidate(name=name, seed=48)
    push_candidate(first, serving_settings)
    other = dataclasses.replace(serving_settings, repository=tmp_path / "empty-repository")

    refused = r"serves versions \[1\] of elsewhere, which the model repository"
    with Traffic(serving_settings.client, name, {"first": first}) as traffic, pytest.raises(PushError, match=refused):
        push_candidate(make_candidate(name=name, seed=49), other)

    assert traffic.failures == [] and served(serving_settings, name) == [1]
    assert not (tmp_path / "empty-repository" / name).exists()


@pytest.mark.parametrize("location", ["gs://bucket/models", "s3:/bucket/models"])
def test_an_unsupported_repository_url_is_refused_before_anything(make_candidate, tmp_path, monkeypatch, location):
    monkeypatch.chdir(tmp_path)
    settings = ServingSettings(client=ClientSettings(url="127.0.0.1:9", retries=0), repository=location)
    with pytest.raises(RepositoryError, match="is not supported"):
        push_candidate(make_candidate(name="url", seed=1), settings)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("candidate")) == []
    with pytest.raises(ParamsError, match="TRITON_MODEL_REPOSITORY"):
        ServingSettings.from_params(ServingParams(), env={"TRITON_MODEL_REPOSITORY": location})


@pytest.mark.triton
def test_rollback_skips_a_rejected_version_and_prune_keeps_the_last_good_one(serving_settings, make_candidate):
    # 3 is rolled back to 2, then 4 is pushed: rollback must serve 2 (not 3), prune must keep 2.
    name = "history"
    settings = dataclasses.replace(serving_settings, retention=1)
    candidates = {seed: make_candidate(name=name, seed=seed) for seed in (50, 51, 52, 53)}
    for seed in (50, 51, 52):
        push_candidate(candidates[seed], settings, prune=False)
    assert rollback(name, settings).version == 2

    pushed = push_candidate(candidates[53], settings, prune=False)
    assert pushed.version == 4
    repo = TritonRepository(settings.repository)
    assert prune_versions(name, settings) == [1, 3] and repo.versions(name) == [2, 4]  # 2 is kept
    back = rollback(name, settings)

    assert (back.version, back.previous) == (2, 4)
    assert served(settings, name) == [2] and answers_like(settings, name, candidates[51])
    status = serving_status(settings, name).models[0]
    assert {v.version: v.verdict for v in status.versions} == {2: "serving", 4: "rejected"}
    with pytest.raises(PushError, match="no earlier verified version"):
        rollback(name, settings)


# --- overrides get the params' checks -----------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TRITON_LOAD_TIMEOUT_S": "0"},
            "TRITON_LOAD_TIMEOUT_S='0': Input should be greater than 0 (as serving.load_timeout_s",
        ),
        ({"TRITON_LOAD_TIMEOUT_S": "-5"}, "TRITON_LOAD_TIMEOUT_S='-5'"),
        ({"TRITON_LOAD_TIMEOUT_S": "soon"}, "TRITON_LOAD_TIMEOUT_S='soon': Input should be a valid number"),
        (
            {"TRITON_CANDIDATE_ENTRY": "tpu"},
            "TRITON_CANDIDATE_ENTRY='tpu': Input should be 'triton', 'gpu' or 'gpu_torchscript' (as serving.candidate_entry",
        ),
    ],
)
def test_environment_overrides_are_checked_like_params(env, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        ServingSettings.from_params(ServingParams(), env=env)


def test_valid_overrides_apply():
    env = {"TRITON_LOAD_TIMEOUT_S": "12.5", "TRITON_CANDIDATE_ENTRY": "gpu", "TRITON_MODEL_REPOSITORY": "s3://b/m"}
    settings = ServingSettings.from_params(ServingParams(), env=env, retention=2)
    assert (settings.load_timeout_s, settings.candidate_entry, settings.repository, settings.retention) == (
        12.5,
        "gpu",
        "s3://b/m",
        2,
    )
    assert isinstance(ServingSettings.from_params(ServingParams(), env={}).repository, Path)


@pytest.mark.parametrize(
    "argv",
    [["prune", "--retention", "0"], ["prune", "--retention", "-2"], ["rollback", "--to", "0"]],
)
def test_command_line_overrides_are_checked(argv, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--params", str(ROOT / "params.yaml"), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "TRITON_HTTP_PORT": "9", "TRITON_RETRIES": "0"},
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert ("serving.retention" in result.stderr) if argv[0] == "prune" else ("a version is a number" in result.stderr)
    assert not (tmp_path / ".triton").exists()


# --- the GPU entry --------------------------------------------------------------------------------
@pytest.mark.triton
def test_the_gpu_entry_is_what_is_pushed_when_asked_for(serving_settings, make_candidate, monkeypatch):
    # This CPU server has neither the onnxruntime backend nor a GPU, so it must refuse to load the
    # entry (and the serving version stays); what matters here is which entry went out.
    name = "gpu_entry"
    first = make_candidate(name=name, seed=60)
    push_candidate(first, serving_settings)
    candidate = make_candidate(name=name, seed=61, gpu_entries=True)
    sent: list[tuple[str, dict, dict]] = []
    real_load = TritonClient.load

    def spy(self, model, config_json=None, timeout_s=None, files=None):
        sent.append((model, json.loads(config_json or "{}"), dict(files or {})))
        return real_load(self, model, config_json, timeout_s, files)

    monkeypatch.setattr(TritonClient, "load", spy)
    gpu = dataclasses.replace(serving_settings, candidate_entry="gpu")

    with pytest.raises(PushError, match="version 2 of gpu_entry failed"):
        push_candidate(candidate, gpu)

    model, config, files = sent[0]
    assert model == f"{name}.staging"
    assert config["backend"] == "onnxruntime" and config["instance_group"][0]["kind"] == "KIND_GPU"
    assert files == {"file:2/model.onnx": (candidate / "gpu" / name / "1" / "model.onnx").read_bytes()}
    assert served(serving_settings, name) == [1] and answers_like(serving_settings, name, first)
    assert TritonRepository(serving_settings.repository).versions(name) == [1]


# --- a full disk ----------------------------------------------------------------------------------
@pytest.mark.triton
def test_a_full_disk_during_push_is_one_line_and_leaves_nothing(make_candidate, small_disk, fill_disk, tmp_path):
    repository = small_disk / "models"
    http, grpc, metrics = free_ports(3)
    server = ServerSettings(repository, tmp_path / "state", http, grpc, metrics, start_timeout_s=60.0)
    start_local_server(server)
    try:
        client = ClientSettings.local(server, timeout_s=30.0, retries=1, backoff_s=0.1)
        settings = ServingSettings(client=client, repository=repository, load_timeout_s=60.0)
        first = make_candidate(name="full", seed=70)
        push_candidate(first, settings)
        fill_disk(small_disk)
        env = {
            **os.environ,
            "TRITON_MODEL_REPOSITORY": str(repository),
            "TRITON_HTTP_PORT": str(http),
            "TRITON_STATE_DIR": str(server.state_dir),
        }
        command = [sys.executable, "-m", "serving", "--params", str(ROOT / "params.yaml"), "push", "--candidate"]
        second = make_candidate(name="full", seed=71)

        failed = subprocess.run([*command, str(second)], cwd=tmp_path, env=env, capture_output=True, text=True)

        assert failed.returncode == 1, failed.stderr
        assert "Traceback" not in failed.stderr
        assert f"push failed: no space left on {repository}: " in failed.stderr
        assert "nothing was written; version 1 keeps serving" in failed.stderr
        assert TritonRepository(repository).versions("full") == [1] and hidden_entries(repository) == []
        assert answers_like(settings, "full", first)
        # Once space is freed, the same push goes through.
        (small_disk / "filler").unlink()
        passed = subprocess.run([*command, str(second)], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert passed.returncode == 0, passed.stderr
        assert answers_like(settings, "full", second)
    finally:
        stop_server(server)


# --- the model repository on S3 -------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_serving(tmp_path_factory) -> Iterator[ServingSettings]:
    """A real S3 API server (moto) holding the model repository, and a local Triton loading from it
    (`--model-repository=s3://http://127.0.0.1:<port>/<bucket>/models`). Credentials only in AWS_*."""
    state = tmp_path_factory.mktemp("s3-triton")
    with pytest.MonkeyPatch.context() as env, moto_s3("triton-models") as endpoint:
        for key, value in S3_ENV.items():
            env.setenv(key, value)
        http, grpc, metrics = free_ports(3)
        server = ServerSettings(f"s3://{endpoint}/triton-models/models", state, http, grpc, metrics, 60.0)
        start_local_server(server)
        try:
            client = ClientSettings.local(server, timeout_s=30.0, retries=1, backoff_s=0.1)
            yield ServingSettings(client=client, repository=server.repository, load_timeout_s=60.0, retention=3)
        finally:
            stop_server(server)


@pytest.mark.triton
@pytest.mark.s3
def test_push_reject_and_rollback_on_an_s3_repository(s3_serving, make_candidate):
    name = "on_s3"
    first, second = make_candidate(name=name, seed=80), make_candidate(name=name, seed=81)
    wrong = make_candidate(name=name, seed=82, broken="outputs")
    models = {"first": first, "second": second, "wrong": wrong}

    assert push_candidate(first, s3_serving).version == 1
    with Traffic(s3_serving.client, name, models) as traffic:
        assert push_candidate(second, s3_serving).version == 2
        with pytest.raises(PushError, match="smoke test"):
            push_candidate(wrong, s3_serving)
        back = rollback(name, s3_serving)

    print(f"S3 repository, push/rejected push/rollback: {traffic.summary()}")
    assert traffic.failures == [] and traffic.answers["wrong"] == 0 and traffic.answers["unknown"] == 0
    assert (back.version, back.previous) == (1, 2)
    assert served(s3_serving, name) == [1] and answers_like(s3_serving, name, first)
    repo = TritonRepository(s3_serving.repository)
    assert repo.versions(name) == [1, 2] and repo.serving_version(name) == 1
    assert repo.history(name).is_rejected(2)
    status = serving_status(s3_serving, name).models[0]
    assert (status.serving, status.live_versions, status.problem) == (1, [1], None)
    assert {v.version: v.verdict for v in status.versions} == {1: "serving", 2: "rejected"}
    assert push_candidate(make_candidate(name=name, seed=80), s3_serving).status == "unchanged"

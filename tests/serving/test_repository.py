"""The live repository: names, whole versions, content hashes, pins, the history of pins, retention,
on a local folder and on a real S3 API server (moto's server mode)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator

import pytest
from support import S3_ENV, moto_s3

from pipeline.candidate import ModelCard, ServedRecord
from serving.params import ServingParams
from serving.repository import (
    Candidate,
    RepositoryError,
    RepositoryFull,
    TritonRepository,
    load_candidate,
    parse_config,
    pinned_versions,
    validate_model_name,
)
from serving.repository.s3 import S3Store, parse_s3_url


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".", "..", ".hidden", "a.b", "x y", "a\\b", "x" * 129, None, 3])
def test_unsafe_model_names_are_rejected(name):
    with pytest.raises(RepositoryError, match="invalid model name"):
        validate_model_name(name)


@pytest.mark.parametrize("name", ["digits", "digits_v2", "a-b", "_x", "X" * 128])
def test_triton_model_names_pass(name):
    assert validate_model_name(name) == name


def card(candidate: Candidate, version: int) -> ModelCard:
    """The candidate's card as a push stores it (with the content hash it records)."""
    served = ServedRecord(version=version, content_hash=candidate.digest, entry="triton", pushed_at="-", candidate="-")
    return ModelCard(model_name=candidate.name, serving=served)


def stored(repo: TritonRepository, make_candidate, count: int, name: str = "m") -> TritonRepository:
    for version in range(1, count + 1):
        candidate = load_candidate(make_candidate(name=name, seed=version))
        repo.write_version(candidate, version, card(candidate, version))
    return repo


def test_versions_are_written_whole_and_found_by_content(make_candidate, tmp_path):
    repo = stored(TritonRepository(tmp_path / "repo"), make_candidate, 2)
    assert repo.versions("m") == [1, 2] and repo.next_version("m") == 3
    assert sorted(p.name for p in repo.version_dir("m", 1).iterdir()) == [
        "config.pbtxt",
        "golden.json",
        "model.onnx",
        "model.py",
        "model_card.json",
    ]
    assert not [p for p in repo.model_dir("m").iterdir() if p.name.startswith(".")]  # no temp folders left
    again = load_candidate(make_candidate(name="m", seed=2))
    assert repo.find_by_hash("m", again.digest) == 2
    assert repo.find_by_hash("m", load_candidate(make_candidate(name="m", seed=99)).digest) is None
    with pytest.raises(RepositoryError, match="already exists"):
        repo.write_version(again, 2, card(again, 2))


def test_a_version_folder_is_readable_by_another_user(make_candidate, tmp_path):
    previous = os.umask(0o022)
    try:
        repo = stored(TritonRepository(tmp_path / "repo"), make_candidate, 1)
        repo.pin("m", 1)
    finally:
        os.umask(previous)
    for path in [repo.version_dir("m", 1), *repo.version_dir("m", 1).iterdir(), repo.model_dir("m") / "config.pbtxt"]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o004, f"{path} is not world-readable"


def test_pin_writes_the_serving_config_and_the_history(make_candidate, tmp_path):
    repo = stored(TritonRepository(tmp_path / "repo"), make_candidate, 3)
    assert repo.serving_version("m") is None
    repo.pin("m", 1)
    repo.pin("m", 2)
    assert repo.serving_version("m") == 2 and repo.rollback_target("m") == 1
    assert pinned_versions(parse_config((repo.model_dir("m") / "config.pbtxt").read_text())) == [2]
    history = json.loads((repo.model_dir("m") / "history.json").read_text())
    assert history["serving"] == 2
    assert [(e["event"], e["version"], e["previous"]) for e in history["events"]] == [
        ("pinned", 1, None),
        ("pinned", 2, 1),
    ]


def test_rollback_and_prune_follow_the_history_not_version_numbers(make_candidate, tmp_path):
    # The case: 3 is rolled back to 2, then 4 is pushed.
    repo = stored(TritonRepository(tmp_path / "repo"), make_candidate, 4)
    for version in (1, 2, 3):
        repo.pin("m", version)
    repo.pin("m", 2, via="rollback", reject_previous="rolled back to 2")
    repo.pin("m", 4)

    assert repo.rollback_target("m") == 2  # not 3, the rejected one
    assert repo.history("m").is_rejected(3)
    assert repo.prune("m", retention=1) == [1, 3]  # 2, the last good one, stays
    assert repo.versions("m") == [2, 4]


def test_never_verified_versions_are_pruned_and_never_a_rollback_target(make_candidate, tmp_path):
    repo = stored(TritonRepository(tmp_path / "repo"), make_candidate, 3)
    repo.pin("m", 1)
    repo.pin("m", 3)  # 2 was written by a push that never committed
    assert repo.rollback_target("m") == 1
    assert repo.prune("m", retention=5) == [2]


def test_a_repository_without_history_keeps_its_pinned_version(make_candidate, tmp_path):
    repo = stored(TritonRepository(tmp_path / "repo"), make_candidate, 4)
    repo.pin("m", 3)
    (repo.model_dir("m") / "history.json").unlink()  # as written before histories existed

    assert repo.serving_version("m") == 3 and repo.rollback_target("m") == 2
    assert repo.prune("m", retention=2) == [1, 4]  # 4 was never shown to have served


def test_numbers_are_never_reused(make_candidate, tmp_path):
    # model-v<N> tags name one model each, so a pruned number stays taken.
    repo = stored(TritonRepository(tmp_path / "repo"), make_candidate, 3)
    for version in (1, 2, 3):
        repo.pin("m", version)
    repo.pin("m", 1, via="rollback", reject_previous="bad")
    repo.remove_version("m", 3)
    assert repo.next_version("m") == 4


def test_candidate_with_a_mismatched_config_name_is_refused(make_candidate):
    candidate = make_candidate(name="m", seed=1)
    config = candidate / "triton" / "m" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "m"', 'name: "other"'))
    with pytest.raises(RepositoryError, match="names model 'other'"):
        load_candidate(candidate)


def test_the_gpu_entries_of_a_candidate_are_selectable(make_candidate):
    root = make_candidate(name="m", seed=1, gpu_entries=True)
    cpu, gpu, torchscript = (load_candidate(root, entry) for entry in ("triton", "gpu", "gpu_torchscript"))

    assert (cpu.name, gpu.name, torchscript.name) == ("m", "m", "m_torchscript")
    assert sorted(cpu.files()) == ["model.onnx", "model.py"]
    assert sorted(gpu.files()) == ["model.onnx"] and 'backend: "onnxruntime"' in gpu.config
    assert "KIND_GPU" in gpu.config and "KIND_GPU" in torchscript.config
    assert sorted(torchscript.files()) == ["model.pt"]
    assert (torchscript.golden.input_name, torchscript.golden.output_name) == ("input__0", "output__0")
    assert len({cpu.digest, gpu.digest, torchscript.digest}) == 3
    with pytest.raises(RepositoryError, match="unknown candidate entry"):
        load_candidate(root, "tpu")


@pytest.mark.parametrize(
    "location",
    ["gs://bucket/models", "as://account/container", "http://host/models", "s3:/bucket/models", "file:/tmp/x"],
)
def test_unsupported_repository_urls_are_refused(location):
    with pytest.raises(RepositoryError, match="is not supported"):
        TritonRepository(location)
    with pytest.raises(ValueError, match="use a local path, s3://"):
        ServingParams(repository=location)


def test_s3_urls_in_both_of_tritons_forms():
    assert parse_s3_url("s3://bucket/a/b/") == (None, "bucket", "a/b")
    assert parse_s3_url("s3://http://127.0.0.1:9000/bucket/models") == ("http://127.0.0.1:9000", "bucket", "models")
    assert parse_s3_url("s3://https://minio.example.com/bucket") == ("https://minio.example.com", "bucket", "")
    with pytest.raises(RepositoryError, match="names no bucket"):
        parse_s3_url("s3://")


# --- a full disk --------------------------------------------------------------------------------
def test_a_full_disk_leaves_nothing_behind(make_candidate, small_disk, fill_disk):
    repo = TritonRepository(small_disk / "models")
    candidate = load_candidate(make_candidate(name="m", seed=1))
    repo.write_version(candidate, 1, card(candidate, 1))
    fill_disk(small_disk)

    with pytest.raises(RepositoryFull, match=f"no space left on {small_disk / 'models'}"):
        second = load_candidate(make_candidate(name="m", seed=2))
        repo.write_version(second, 2, card(second, 2))

    assert repo.versions("m") == [1]
    assert sorted(p.name for p in repo.model_dir("m").iterdir()) == ["1"]  # no temporary folder


# --- S3 -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3("models-bucket") as endpoint:
        yield endpoint


@pytest.fixture
def s3_repo(s3_endpoint, monkeypatch, request) -> TritonRepository:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    prefix = request.node.name.replace("[", "-").replace("]", "")
    return TritonRepository(f"s3://{s3_endpoint}/models-bucket/{prefix}", lease_s=5.0)


@pytest.mark.s3
def test_s3_versions_pins_history_and_prune(make_candidate, s3_repo):
    repo = stored(s3_repo, make_candidate, 4)
    assert repo.models() == ["m"] and repo.versions("m") == [1, 2, 3, 4]
    assert repo.find_by_hash("m", load_candidate(make_candidate(name="m", seed=3)).digest) == 3
    assert sorted(repo.version_files("m", 2)) == ["model.onnx", "model.py"]
    for version in (1, 2, 3):
        repo.pin("m", version)
    repo.pin("m", 2, via="rollback", reject_previous="rolled back to 2")
    repo.pin("m", 4)

    assert repo.serving_version("m") == 4 and repo.rollback_target("m") == 2
    assert pinned_versions(repo.serving_config("m")) == [4]
    assert repo.prune("m", retention=1) == [1, 3]
    assert repo.versions("m") == [2, 4]


@pytest.mark.s3
def test_s3_an_upload_cut_off_is_not_a_version(make_candidate, s3_repo):
    repo = stored(s3_repo, make_candidate, 1)
    store = repo.store
    assert isinstance(store, S3Store)
    store.write("m/2/.partial", b"")  # what a worker killed mid-upload leaves
    store.write("m/2/model.py", b"half")

    assert repo.versions("m") == [1] and repo.incomplete_versions("m") == [2]
    assert repo.next_version("m") == 3
    repo.remove_version("m", 2)
    assert repo.incomplete_versions("m") == [] and store.all_folders("m") == ["1"]


@pytest.mark.s3
def test_s3_lock_excludes_a_second_writer_and_expires(s3_repo):
    order: list[str] = []

    def second() -> None:
        with s3_repo.lock("m", timeout_s=30):
            order.append("second")

    with s3_repo.lock("m", timeout_s=5):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(1.0)
        order.append("first done")
    thread.join(timeout=30)
    assert order == ["first done", "second"]

    with s3_repo.lock("m", timeout_s=5), pytest.raises(RepositoryError, match="holds s3://"):
        TritonRepository(s3_repo.store.location, lease_s=60).lock("m", timeout_s=0.5).__enter__()
    # A lease that ran out (its worker died) is taken over.
    s3_repo.store.write(".m.lock", json.dumps({"owner": "dead:1", "expires_at": time.time() - 1}).encode())
    with s3_repo.lock("m", timeout_s=5):
        pass


@pytest.mark.s3
def test_s3_without_credentials_says_so(s3_endpoint, monkeypatch):
    for key in S3_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    repo = TritonRepository(f"s3://{s3_endpoint}/models-bucket/nocreds")
    with pytest.raises(RepositoryError, match="no S3 credentials found; set AWS_ACCESS_KEY_ID"):
        repo.models()

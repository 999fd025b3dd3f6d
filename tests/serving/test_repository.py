"""The live repository on disk: names, atomic versions, content hashes, pinning, retention."""

from __future__ import annotations

import pytest

from serving.repository import (
    RepositoryError,
    TritonRepository,
    load_candidate,
    parse_config,
    pinned_versions,
    validate_model_name,
)


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".", "..", ".hidden", "a.b", "x y", "a\\b", "x" * 129, None, 3])
def test_unsafe_model_names_are_rejected(name):
    with pytest.raises(RepositoryError, match="invalid model name"):
        validate_model_name(name)


@pytest.mark.parametrize("name", ["digits", "digits_v2", "a-b", "_x", "X" * 128])
def test_triton_model_names_pass(name):
    assert validate_model_name(name) == name


def stored(repo: TritonRepository, make_candidate, count: int, name: str = "m") -> TritonRepository:
    for version in range(1, count + 1):
        candidate = load_candidate(make_candidate(name=name, seed=version))
        repo.write_version(candidate, version, {"serving": {"content_hash": candidate.digest}})
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
        repo.write_version(again, 2, {})


def test_pin_writes_the_serving_config(make_candidate, tmp_path):
    repo = stored(TritonRepository(tmp_path / "repo"), make_candidate, 3)
    assert repo.serving_version("m") is None
    repo.pin("m", 2)
    assert repo.serving_version("m") == 2 and repo.predecessor("m", 2) == 1
    assert pinned_versions(parse_config((repo.model_dir("m") / "config.pbtxt").read_text())) == [2]


def test_prune_keeps_retention_newest_plus_serving_and_its_predecessor(make_candidate, tmp_path):
    repo = stored(TritonRepository(tmp_path / "repo"), make_candidate, 6)
    repo.pin("m", 3)  # rolled back to 3: 3 and 2 must survive whatever the retention
    assert repo.prune("m", retention=2) == [1, 4]
    assert repo.versions("m") == [2, 3, 5, 6]
    assert repo.prune("m", retention=2) == []


def test_candidate_with_a_mismatched_config_name_is_refused(make_candidate):
    candidate = make_candidate(name="m", seed=1)
    config = candidate / "triton" / "m" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "m"', 'name: "other"'))
    with pytest.raises(RepositoryError, match="names model 'other'"):
        load_candidate(candidate)

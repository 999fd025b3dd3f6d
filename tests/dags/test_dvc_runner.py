"""The DVC side of a stage task: reading `dvc status`, the remote's settings, and keeping secrets
out of files and messages. (Stages really running across workers: test_fleet_steps.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestration.dvc_runner import DvcSettings, changes, record_remote
from orchestration.remote import DvcRemote, RemoteError, explain, resolve
from orchestration.workspace import dvc_command

SECRET = "wJalrXUtnFEMI-not-a-real-secret"
ROOT = Path(__file__).resolve().parents[2]


def test_changes_ignore_outputs_that_are_only_absent_here() -> None:
    # A fresh checkout has none of the outputs: DVC says "deleted" / "not in cache"; not a change.
    assert changes({"train": [{"changed outs": {"models/model.pt": "not in cache"}}]}, "train") == []
    assert changes({"train": [{"changed outs": {"models/model.pt": "deleted"}}]}, "train") == []
    assert changes({}, "train") == []
    status = {
        "train": [
            {"changed deps": {"data/clean.parquet": "modified", "params.yaml": {"train.epochs": "modified"}}},
            {"changed outs": {"models/model.pt": "modified"}},
            "changed command",
        ]
    }
    assert changes(status, "train") == [
        "dep data/clean.parquet modified",
        "param train.epochs modified",
        "out models/model.pt modified",
        "changed command",
    ]
    assert changes(status, "export") == []
    # inputs left on the remote because they are what the lock says: absent, not changed
    absent = {"train": [{"changed deps": {"data/clean.parquet": "deleted", "stages/train.py": "modified"}}]}
    assert changes(absent, "train", absent_inputs=["data/clean.parquet"]) == ["dep stages/train.py modified"]
    assert changes(absent, "train") == ["dep data/clean.parquet deleted", "dep stages/train.py modified"]


def test_the_remote_comes_from_params_env_or_a_connection(tmp_path: Path) -> None:
    assert resolve(tmp_path, ".dvc-remote", env={}) == DvcRemote(url=str(tmp_path / ".dvc-remote"))
    assert resolve(tmp_path, None, env={}) is None
    over = resolve(tmp_path, ".dvc-remote", env={"RETRAIN_DVC_REMOTE": "s3://bucket/dvc"})
    assert over is not None and over.url == "s3://bucket/dvc" and not over.is_local

    env = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000"}
    connection = {"login": "AKIAEXAMPLE", "password": SECRET, "extra": {"region_name": "eu-west-1"}}
    remote = resolve(tmp_path, "s3://bucket/dvc", env=env, connection=connection)
    assert remote is not None and remote.endpoint_url == "http://127.0.0.1:9000" and remote.region == "eu-west-1"
    assert remote.dvc_config()["remote"]["retrain"]["secret_access_key"] == SECRET  # in memory only
    assert SECRET not in repr(remote) and SECRET not in remote.describe()
    with pytest.raises(RemoteError, match="needs both login"):
        resolve(tmp_path, "s3://bucket/dvc", env={}, connection={"login": "AKIAEXAMPLE"})


def test_the_committed_dvc_config_names_the_remote_but_never_a_secret(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(dvc_command("init", "-q"), cwd=repo, check=True)
    remote = DvcRemote(
        url="s3://bucket/dvc",
        endpoint_url="http://127.0.0.1:9000",
        credentials={"access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET},
    )
    settings = DvcSettings(cache_dir=tmp_path / "cache", remote=remote)
    assert record_remote(repo, settings) is True
    config = (repo / ".dvc" / "config").read_text()
    assert "remote = retrain" in config and "s3://bucket/dvc" in config and "endpointurl" in config
    assert SECRET not in config and "AKIAEXAMPLE" not in config
    assert not (repo / ".dvc" / "config.local").exists()
    assert record_remote(repo, settings) is False, "an unchanged remote rewrites nothing"


def test_remote_errors_say_what_to_do_and_never_show_a_secret() -> None:
    remote = DvcRemote(url="s3://bucket/dvc", credentials={"secret_access_key": SECRET})

    class NoCredentialsError(Exception):
        pass

    text = explain(remote, NoCredentialsError("Unable to locate credentials"))
    assert text.startswith("DVC remote s3://bucket/dvc: no S3 credentials: set AWS_ACCESS_KEY_ID")
    text = explain(remote, PermissionError("Forbidden: SignatureDoesNotMatch"))
    assert "credentials were refused" in text
    text = explain(remote, ConnectionRefusedError("Could not connect to the endpoint URL"))
    assert "cannot be reached" in text
    assert all(SECRET not in explain(remote, e) for e in (ValueError(""), OSError("x")))


def test_dvc_reads_yaml_with_the_c_parser_and_gets_the_same_lock():
    """Each stage task loads dvc.lock about a dozen times through DVC (status, reproduce, push); with
    ruamel's pure-Python parser that was most of a task's own overhead. DVC's loader must pick the C
    parser (ruamel.yaml.clib) and read the project's lock exactly as the pure parser does."""
    from dvc.utils.serialize import parse_yaml
    from ruamel.yaml import YAML
    from ruamel.yaml.main import CParser

    assert CParser is not None, "ruamel.yaml.clib is not installed (pyproject.toml lists it)"
    assert YAML(typ="safe").Parser is CParser
    text = (ROOT / "dvc.lock").read_text()
    assert parse_yaml(text, "dvc.lock") == YAML(typ="safe", pure=True).load(text)

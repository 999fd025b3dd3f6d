"""The DVC remote on S3, against a real S3 API server on 127.0.0.1 (moto's server mode, as DVC's
own tests use), with the task bodies (orchestration/steps.py) running the toy pipeline of
conftest.py on two workers that share nothing but the remotes. (The real pipeline's round trip
through a published tag is checked on the default local remote by test_retrain_e2e.py.)

- publish pushes to the S3 server, and a fresh clone of the workspace's git remote at tag model-v1
  restores every output with `dvc pull`; `dvc status` there is clean;
- the credentials (one worker from an Airflow-Connection-like dict, the other from its
  environment) appear in no file, commit, log line or task result;
- missing, wrong and unreachable S3 give a clear error naming the remote.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import S3_ENV, free_ports, moto_s3

from orchestration import steps
from orchestration.remote import RemoteError
from orchestration.workspace import dvc_command

pytestmark = [pytest.mark.integration, pytest.mark.s3]

BUCKET = "retrain"
# Made up per run (moto takes any key), so that no source file the workspace mirrors contains them.
SECRET = f"conn-{uuid.uuid4().hex}"  # the Connection's secret access key (worker a)
ENV_SECRET = f"env-{uuid.uuid4().hex}"  # the environment's (worker b)
ENV_CREDS = {"AWS_ACCESS_KEY_ID": "AKIAENVTEST", "AWS_SECRET_ACCESS_KEY": ENV_SECRET}
QUIET_AWS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "2"}


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, helpers) -> Path:
    return helpers.toy_project(tmp_path_factory.mktemp("s3") / "project")


def worker_env(project: Path, name: str, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RETRAIN_"))}
    env.update(QUIET_AWS)
    env.update(
        {
            "RETRAIN_WORKER_ROOT": str(project.parent / f"worker-{name}"),
            "RETRAIN_DVC_REMOTE": f"s3://{BUCKET}/dvc",
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_DEFAULT_REGION": S3_ENV["AWS_DEFAULT_REGION"],
        }
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def published(project: Path, s3: str) -> dict:
    """One run: worker a (credentials from a Connection) prepares and runs the data stages and
    training; worker b (credentials in its environment) the rest and publish."""
    connection = {"login": "AKIAFLEETTEST", "password": SECRET, "extra": {}}
    a = steps.Fleet.resolve(project, worker_env(project, "a", s3), connection=connection)
    b = steps.Fleet.resolve(project, worker_env(project, "b", s3))
    on_b = {"fold@0", "fold@2"}

    saved = dict(os.environ)
    logs: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logs.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    try:
        prepared = steps.prepare(a, "run-1", None)
        results = []
        for name in a.order:
            fleet = b if name in on_b else a
            # worker b's credentials live in its (here: this process's) environment
            os.environ.clear()
            os.environ.update({**saved, **QUIET_AWS} if fleet is a else {**saved, **QUIET_AWS, **ENV_CREDS})
            results.append(steps.stage(fleet, "run-1", prepared, name, results))
        os.environ.update(ENV_CREDS)
        out = steps.publish(b, "run-1", prepared, results, 1, "toy", "toy version 1")
    finally:
        os.environ.clear()
        os.environ.update(saved)
        logging.getLogger().removeHandler(handler)
    return {"prepared": prepared, "results": results, "publish": out, "logs": logs, "git_remote": a.ws.git_remote}


def test_publish_pushes_to_s3_and_a_fresh_clone_restores_version_1(
    published: dict, project: Path, s3: str, tmp_path: Path
) -> None:
    import boto3

    assert published["publish"]["pushed"] and published["publish"]["tag"] == "model-v1"
    assert all(r["outcome"] == "ran" for r in published["results"])
    client = boto3.client("s3", endpoint_url=s3, **{k.lower(): v for k, v in S3_ENV.items() if "KEY" in k})
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="dvc/").get("Contents", [])]
    assert any(k.startswith("dvc/files/md5/") for k in keys) and any(k.startswith("dvc/runs/") for k in keys)
    assert not any((project / ".dvc-remote").rglob("*")), "nothing went to the default local remote"

    clone = tmp_path / "clone"
    env = {**os.environ, **ENV_CREDS, **QUIET_AWS}
    subprocess.run(["git", "clone", "-q", published["git_remote"], str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", "model-v1"], cwd=clone, check=True)
    subprocess.run(dvc_command("pull", "-q"), cwd=clone, env=env, check=True)
    status = subprocess.run(dvc_command("status", "--json"), cwd=clone, env=env, capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout + status.stderr
    for path in ("data.txt", "out/0.json", "out/1.json", "out/2.json", "summary.json"):
        assert (clone / path).is_file(), path

    # the registry, the GTO way
    from orchestration.registry import in_stage

    assert in_stage(clone, "toy", "prod") == 1


def test_no_secret_in_any_file_commit_log_or_result(published: dict, tmp_path: Path) -> None:
    assert SECRET not in json.dumps(published["results"]) + json.dumps(published["publish"])
    assert not [line for line in published["logs"] if SECRET in line or ENV_SECRET in line]
    history = subprocess.run(
        ["git", "--git-dir", published["git_remote"], "log", "--all", "-p", "--format=%B"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "s3://retrain/dvc" in history  # the remote is named in the committed .dvc/config...
    assert SECRET not in history and ENV_SECRET not in history  # ...its secret never
    for worker in ("a", "b"):
        root = Path(published["prepared"].workspace).parents[3] / f"worker-{worker}"
        for path in root.rglob("config*"):
            if path.is_file() and ".dvc" in path.parts:
                assert SECRET not in path.read_text(errors="replace"), path
                assert ENV_SECRET not in path.read_text(errors="replace"), path


def test_missing_credentials_give_a_clear_error(project: Path, s3: str) -> None:
    fleet = steps.Fleet.resolve(project, worker_env(project, "nocreds", s3, HOME=str(project.parent)))
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(worker_env(project, "nocreds", s3, HOME=str(project.parent)))
        with pytest.raises(RemoteError, match=r"DVC remote s3://retrain/dvc \(endpoint .*\): no S3 credentials"):
            steps.prepare(fleet, "run-nocreds", None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_wrong_credentials_and_an_unreachable_endpoint_give_clear_errors(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in QUIET_AWS.items():
        monkeypatch.setenv(key, value)
    # moto checks signatures once its first unauthenticated actions (creating the bucket) are used up
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "1")
    with moto_s3(BUCKET) as strict:
        connection = {"login": "AKIAWRONG", "password": "wrong-" + SECRET, "extra": {}}
        fleet = steps.Fleet.resolve(project, worker_env(project, "wrong", strict), connection=connection)
        with pytest.raises(RemoteError, match="credentials were refused") as refused:
            steps.prepare(fleet, "run-wrong", None)
        assert SECRET not in str(refused.value)

    (closed,) = free_ports(1)
    connection = {"login": "AKIAFLEETTEST", "password": SECRET, "extra": {}}
    fleet = steps.Fleet.resolve(
        project, worker_env(project, "down", f"http://127.0.0.1:{closed}"), connection=connection
    )
    with pytest.raises(
        RemoteError, match=rf"DVC remote s3://retrain/dvc \(endpoint http://127.0.0.1:{closed}\): it cannot be reached"
    ):
        steps.prepare(fleet, "run-down", None)

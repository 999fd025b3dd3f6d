"""A data source in object storage, through the fleet's task bodies (orchestration/steps.py):
the real clean and split stages of dvc.yaml on a small digits table in a versioned bucket of
moto's S3 server, two workers that share nothing but the remotes (the DVC remote is on the same
S3 server), then publish.

- prepare pins the source (each object's key, version id, ETag and size) into the run's commit;
  worker a runs clean reading the bucket, worker b runs split from the DVC remote;
- after the bucket gains a partition and has a file rewritten, a fresh clone at model-v1 gives
  back byte-identical clean and split outputs, with `dvc pull` and with `dvc repro` run again from
  the pinned objects;
- an unchanged prefix pins the same bytes (DVC reruns nothing); a new partition changes the pin.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from support import GIT_ENV, S3_ENV, copy_project, edit_params, moto_s3

from orchestration import pinning, steps
from orchestration.workspace import dvc_command, tool_env
from pipeline.lineage import file_md5

pytestmark = [pytest.mark.integration, pytest.mark.s3]

SOURCE_BUCKET = "events-bucket"  # versioned: the raw data
DVC_BUCKET = "retrain"  # the DVC remote
SOURCE = f"s3://{SOURCE_BUCKET}/digits/"
QUIET_AWS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "2"}
# The workers' secret, made up per run (moto takes any), so that no source file the workspace mirrors holds it.
SECRET = f"source-{uuid.uuid4().hex}"


def digits_part(rows: slice) -> bytes:
    from sklearn.datasets import load_digits

    digits = load_digits()
    columns = {f"px_{i}": pa.array(digits.data[rows, i].astype("uint8")) for i in range(64)}
    buffer = io.BytesIO()
    pq.write_table(pa.table({**columns, "label": pa.array(digits.target[rows])}), buffer)
    return buffer.getvalue()


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    )


def md5(path: Path) -> str:
    """The md5 DVC records: of a file's bytes, or `<md5 of the listing>.dir` for a folder (clean
    and split write folders of Parquet parts)."""
    return file_md5(path)


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_s3(SOURCE_BUCKET, DVC_BUCKET) as endpoint:
        client = s3_client(endpoint)
        client.put_bucket_versioning(Bucket=SOURCE_BUCKET, VersioningConfiguration={"Status": "Enabled"})
        client.put_object(
            Bucket=SOURCE_BUCKET, Key="digits/day=2026-01-05/part-0.parquet", Body=digits_part(slice(0, 130))
        )
        client.put_object(
            Bucket=SOURCE_BUCKET, Key="digits/day=2026-01-12/part-0.parquet", Body=digits_part(slice(130, 260))
        )
        yield endpoint


@pytest.fixture(scope="module")
def aws_env(s3: str) -> Iterator[dict[str, str]]:
    """The workers' environment: the bucket's endpoint and credentials (as a worker would have
    them, or as the stage tasks set them from the Connection aws_default)."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(("AWS_", "RETRAIN_"))]:
        del os.environ[key]
    env = {
        **S3_ENV,
        **QUIET_AWS,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL_S3": s3,
        "RETRAIN_DVC_REMOTE": f"s3://{DVC_BUCKET}/dvc",
    }
    os.environ.update(env)
    try:
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project with only its clean and split stages, reading the bucket."""
    target = tmp_path_factory.mktemp("pinning") / "project"
    target.mkdir()
    copy_project(target)
    pipeline = yaml.safe_load((target / "dvc.yaml").read_text())
    pipeline = {"stages": {name: pipeline["stages"][name] for name in ("clean", "split")}}
    (target / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    edit_params(
        target, data__source=SOURCE, airflow__demo_batches=False, airflow__gpu_stages=[], airflow__drift_stage=None
    )
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "commit", "-qam", "clean and split on a bucket"], cwd=target, env=env, check=True)
    return target


def worker(project: Path, name: str) -> steps.Fleet:
    return steps.Fleet.resolve(project, {**os.environ, "RETRAIN_WORKER_ROOT": str(project.parent / f"worker-{name}")})


@pytest.fixture(scope="module")
def published(project: Path, aws_env: dict[str, str]) -> dict:
    a, b = worker(project, "a"), worker(project, "b")
    prepared = steps.prepare(a, "run-1", None)
    clean = steps.stage(a, "run-1", prepared, "clean", [])
    split = steps.stage(b, "run-1", prepared, "split", [clean])
    out = steps.publish(b, "run-1", prepared, [clean, split], 1, "digits", "version 1")
    return {"prepared": prepared, "results": [clean, split], "publish": out, "git_remote": a.ws.git_remote}


def test_prepare_pins_the_prefix_and_the_stages_read_it_on_two_workers(published: dict, project: Path):
    prepared = published["prepared"]
    assert prepared.pinned == {
        "source": SOURCE,
        "pin": pinning.PIN_FILE,
        "objects": 2,
        "bytes": prepared.pinned["bytes"],
        "changed": True,
    }
    assert [r["outcome"] for r in published["results"]] == ["ran", "ran"]
    workspace = Path(prepared.workspace)
    pin = json.loads((workspace / pinning.PIN_FILE).read_text())
    assert pin["source"] == SOURCE
    assert [(o["url"].removeprefix(SOURCE), o["partition"]) for o in pin["objects"]] == [
        ("day=2026-01-05/part-0.parquet", {"day": "2026-01-05"}),
        ("day=2026-01-12/part-0.parquet", {"day": "2026-01-12"}),
    ]
    assert all(o["version_id"] and o["etag"] and o["size"] > 0 for o in pin["objects"])
    assert yaml.safe_load((workspace / "params.yaml").read_text())["data"]["source"] == pinning.PIN_FILE
    clean_lock = published["results"][0]["lock"]["clean"]
    deps = {dep["path"]: dep.get("md5") for dep in clean_lock["deps"]}
    assert deps[pinning.PIN_FILE] == md5(workspace / pinning.PIN_FILE)
    # dvc.lock names each object read, at its version (clean tracks the pin as a params file too)
    assert clean_lock["params"][pinning.PIN_FILE] == {"objects": pin["objects"], "source": SOURCE}
    assert "s3://" not in json.dumps(clean_lock["deps"])  # DVC never hashes the bucket


def test_the_credentials_appear_in_no_commit_result_or_pin(published: dict):
    secret = SECRET
    assert secret not in json.dumps([published["prepared"].to_xcom(), published["results"], published["publish"]])
    history = subprocess.run(
        ["git", "--git-dir", published["git_remote"], "log", "--all", "-p", "--format=%B"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert pinning.PIN_FILE in history and secret not in history


def test_a_fresh_clone_of_model_v1_gives_back_the_same_outputs_after_the_bucket_changed(
    published: dict, s3: str, aws_env: dict[str, str], tmp_path: Path
):
    client = s3_client(s3)
    client.put_object(
        Bucket=SOURCE_BUCKET, Key="digits/day=2026-01-19/part-0.parquet", Body=digits_part(slice(260, 390))
    )
    client.put_object(
        Bucket=SOURCE_BUCKET, Key="digits/day=2026-01-05/part-0.parquet", Body=digits_part(slice(400, 530))
    )

    clone = tmp_path / "clone"
    env = tool_env({**os.environ, **aws_env})  # the stage commands' `python` is this environment's
    subprocess.run(["git", "clone", "-q", published["git_remote"], str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", "model-v1"], cwd=clone, check=True)
    subprocess.run(dvc_command("pull", "-q"), cwd=clone, env=env, check=True)
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    locked = {o["path"]: o["md5"] for name in ("clean", "split") for o in lock["stages"][name]["outs"]}
    outputs = ["data/clean.parquet", "data/quarantine.parquet", "data/split.parquet"]
    assert {path: md5(clone / path) for path in outputs} == {path: locked[path] for path in outputs}
    status = subprocess.run(dvc_command("status", "--json"), cwd=clone, env=env, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}, status.stdout + status.stderr  # the pin, not the bucket, is the input

    for path in outputs:  # and computed again: from the pinned versions, not the bucket as it is now
        shutil.rmtree(clone / path)  # a folder of Parquet parts
    subprocess.run(dvc_command("repro", "-q", "--force", "--no-run-cache"), cwd=clone, env=env, check=True)
    assert {path: md5(clone / path) for path in outputs} == {path: locked[path] for path in outputs}


def test_an_unchanged_prefix_pins_the_same_bytes_and_a_new_partition_changes_them(
    published: dict, s3: str, aws_env: dict[str, str], tmp_path: Path
):
    root = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", published["git_remote"], str(root)], check=True)
    first = pinning.pin_checkout(root)
    second = pinning.pin_checkout(root)
    assert first is not None and second is not None and not second["changed"]
    before = (root / pinning.PIN_FILE).read_bytes()
    s3_client(s3).put_object(
        Bucket=SOURCE_BUCKET, Key="digits/day=2026-01-26/part-0.parquet", Body=digits_part(slice(530, 660))
    )
    third = pinning.pin_checkout(root)
    assert third is not None and third["changed"] and third["objects"] == first["objects"] + 1
    assert (root / pinning.PIN_FILE).read_bytes() != before


def test_a_local_source_empties_the_pin_so_dvc_lock_lists_no_stale_objects(published: dict, tmp_path: Path):
    root = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", published["git_remote"], str(root)], check=True)
    assert json.loads((root / pinning.PIN_FILE).read_text())["objects"]  # the bucket's, from run-1
    edit_params(root, data__source="data/embedded/digits.parquet")
    assert pinning.pin_checkout(root) is None
    assert json.loads((root / pinning.PIN_FILE).read_text()) == {"objects": [], "source": ""}

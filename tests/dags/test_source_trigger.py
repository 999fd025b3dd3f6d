"""The trigger that watches a data source's bucket prefix (orchestration/source_trigger.py), run as
the triggerer runs it (its async generator) against moto's S3 server, and the Connection it reads.

Outside the triggerer it keeps what it saw in memory; in the triggerer, in the asset's state store
(tests/dags/test_source_triggered_run.py runs it there, under the real scheduler)."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import S3_ENV, moto_s3

from orchestration.pinning import connection_env
from orchestration.source_trigger import SourcePrefixTrigger, data_asset

BUCKET = "watched-bucket"
SOURCE = f"s3://{BUCKET}/events/"


def part(rows: int) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"px_0": list(range(rows)), "label": [0] * rows}), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def s3() -> Iterator:
    with moto_s3(BUCKET) as endpoint:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
        )
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        client.put_object(Bucket=BUCKET, Key="events/day=1/part-0.parquet", Body=part(5))
        yield endpoint, client


def test_the_connection_gives_the_bucket_settings_as_amazons_provider_reads_them():
    connection = {
        "login": "AKIAEXAMPLE",
        "password": "a-secret",
        "extra": {"region_name": "eu-west-1", "service_config": {"s3": {"endpoint_url": "http://127.0.0.1:9000"}}},
    }
    assert connection_env(connection) == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "a-secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
    }
    assert connection_env({"extra": {"endpoint_url": "http://minio:9000"}}) == {
        "AWS_ENDPOINT_URL_S3": "http://minio:9000"
    }
    assert connection_env(None) == {}


def test_only_a_source_in_s3_gets_a_watcher(tmp_path: Path):
    watched = data_asset("raw_data", SOURCE, tmp_path, 30.0, "aws_default")
    (watcher,) = watched.watchers
    assert watched.name == "raw_data" and watcher.trigger.source == SOURCE and watcher.trigger.poll_s == 30.0
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "orchestration.source_trigger.SourcePrefixTrigger"
    assert SourcePrefixTrigger(**kwargs).serialize() == (classpath, kwargs)
    (tmp_path / "source.pin.json").write_text(f'{{"source": "{SOURCE}", "objects": []}}')
    assert data_asset("raw_data", "source.pin.json", tmp_path, 30.0, None).watchers[0].trigger.source == SOURCE
    assert data_asset("raw_data", "data/embedded/digits.parquet", tmp_path, 30.0, None).watchers == []


@pytest.mark.s3
def test_a_new_partition_fires_once_and_an_unchanged_prefix_never(s3, monkeypatch: pytest.MonkeyPatch):
    endpoint, client = s3
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint}.items():
        monkeypatch.setenv(key, value)
    trigger = SourcePrefixTrigger(source=SOURCE, poll_s=0.05, conn_id=None)

    async def watch() -> list:
        events: list = []

        async def consume() -> None:
            async for event in trigger.run():
                events.append(event.payload)

        async def looks(n: int) -> None:  # until the trigger has listed the prefix n times in all
            while (trigger._seen or {}).get("looks", 0) < n:
                await asyncio.sleep(0.01)

        task = asyncio.create_task(consume())
        try:
            await asyncio.wait_for(looks(3), timeout=30)  # the first look and two unchanged ones
            assert events == []
            await asyncio.to_thread(client.put_object, Bucket=BUCKET, Key="events/day=2/part-0.parquet", Body=part(7))
            await asyncio.wait_for(looks(trigger._seen["looks"] + 3), timeout=30)  # sees it, then twice unchanged
            return events
        finally:
            task.cancel()

    events = asyncio.run(watch())
    assert len(events) == 1
    assert events[0]["source"] == SOURCE and events[0]["objects"] == 2

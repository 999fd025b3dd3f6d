"""Sources: a local folder and the same tree in a bucket list and read the same way; each object is
read at the version it was listed with; each failure names the object and its cause.

The bucket is moto's S3 server on 127.0.0.1 (a real S3 API over HTTP), versioned where a test needs
versions."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import S3_ENV, free_ports, moto_s3

from pipeline import batches, sources
from pipeline.params import DataParams
from pipeline.sources import SourceError, SourceObject, list_source, open_object
from pipeline.tables import TableError

BUCKET = "data-bucket"  # versioned
PLAIN = "plain-bucket"  # not versioned
CONTRACT = DataParams(
    source="unused", label="label", feature_prefix="px_", image_shape=None, value_range=None, classes=[0, 1, 2]
)


def parquet_bytes(rows: int, start: int = 0) -> bytes:
    table = pa.table({"px_0": [float(i) for i in range(start, start + rows)], "label": [i % 3 for i in range(rows)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=max(1, rows // 3))
    return buffer.getvalue()


# The same tree on disk and in the buckets: Hive partitions, a CSV among Parquet files, and the
# marker files Spark and Hadoop leave (never data).
TREE = {
    "date=2026-01-05/part-0.parquet": parquet_bytes(40),
    "date=2026-01-05/part-1.parquet": parquet_bytes(7, start=40),
    "date=2026-01-12/part-0.csv": b"px_0,label\n" + b"".join(b"%d.5,%d\n" % (i, i % 3) for i in range(30)),
    "date=2026-01-12/_SUCCESS": b"",
    "_temporary/0/part-9.parquet": b"half-written",
    "notes.txt": b"not a table",
}


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    )


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3(BUCKET, PLAIN) as url:
        s3 = client(url)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        for bucket in (BUCKET, PLAIN):
            for key, body in TREE.items():
                s3.put_object(Bucket=bucket, Key=f"events/{key}", Body=body)
        yield url


@pytest.fixture
def s3_env(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    return endpoint


@pytest.fixture
def local_tree(tmp_path: Path) -> Path:
    for key, body in TREE.items():
        path = tmp_path / "events" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return tmp_path / "events"


def relative(objects: list[SourceObject], root: str) -> list[tuple[str, int, dict]]:
    return [(o.url.removeprefix(root), o.size, dict(o.partition)) for o in objects]


def read_all(source) -> pa.Table:
    stream = batches.open_source(source, CONTRACT, batch_mb=0.001)
    return pa.Table.from_batches(list(stream.batches()), schema=stream.schema)


def test_a_local_folder_lists_its_tables_in_path_order_with_partitions(local_tree: Path):
    listed = relative(list_source(local_tree), f"{local_tree}/")
    assert listed == [
        ("date=2026-01-05/part-0.parquet", len(TREE["date=2026-01-05/part-0.parquet"]), {"date": "2026-01-05"}),
        ("date=2026-01-05/part-1.parquet", len(TREE["date=2026-01-05/part-1.parquet"]), {"date": "2026-01-05"}),
        ("date=2026-01-12/part-0.csv", len(TREE["date=2026-01-12/part-0.csv"]), {"date": "2026-01-12"}),
    ]
    assert read_all(local_tree).num_rows == 77


@pytest.mark.s3
def test_a_prefix_reads_as_the_same_table_as_the_same_folder_on_disk(s3_env: str, local_tree: Path):
    objects = list_source(f"s3://{BUCKET}/events/")
    assert relative(objects, f"s3://{BUCKET}/events/") == relative(list_source(local_tree), f"{local_tree}/")
    assert all(o.version_id and o.etag for o in objects)  # a versioned bucket: each object pinned
    assert read_all(objects).equals(read_all(local_tree))
    assert [o.url for o in list_source(f"s3://{PLAIN}/events")] == [o.url.replace(BUCKET, PLAIN) for o in objects]
    single = list_source(f"s3://{BUCKET}/events/date=2026-01-12/part-0.csv")
    assert [(o.url, o.partition) for o in single] == [(objects[2].url, ())]  # a file: no folders below the source


@pytest.mark.s3
def test_an_object_is_read_at_its_pinned_version_after_a_rewrite(s3_env: str):
    key = "pinned/date=2026-02-02/part-0.parquet"
    s3 = client(s3_env)
    s3.put_object(Bucket=BUCKET, Key=key, Body=parquet_bytes(12))
    (pinned,) = list_source(f"s3://{BUCKET}/pinned/")
    s3.put_object(Bucket=BUCKET, Key=key, Body=parquet_bytes(5, start=100))  # rewritten in place
    assert pinned.version_id != list_source(f"s3://{BUCKET}/pinned/")[0].version_id
    with open_object(pinned) as file:
        assert file.read() == parquet_bytes(12)
    restored = SourceObject.from_dict(json.loads(json.dumps(pinned.to_dict())))  # as a manifest keeps it
    assert restored == pinned and read_all([restored]).num_rows == 12


@pytest.mark.s3
def test_a_rewritten_object_in_an_unversioned_bucket_is_an_error_not_other_bytes(s3_env: str):
    s3 = client(s3_env)
    s3.put_object(Bucket=PLAIN, Key="moving/a.parquet", Body=parquet_bytes(12))
    (listed,) = list_source(f"s3://{PLAIN}/moving/")
    assert listed.version_id is None and listed.etag
    s3.put_object(Bucket=PLAIN, Key="moving/a.parquet", Body=parquet_bytes(13))
    with pytest.raises(SourceError, match=r"s3://plain-bucket/moving/a.parquet: rewritten since it was listed"):
        open_object(listed)


@pytest.mark.s3
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://no-such-bucket/events/", r"^s3://no-such-bucket/events/: no such bucket"),
        (f"s3://{BUCKET}/missing/", r"^s3://data-bucket/missing/: no such key or prefix in bucket 'data-bucket'"),
        (f"s3://{BUCKET}/events/notes.txt", r"holds no .csv or .parquet object"),
        ("gs://elsewhere/events/", r"unsupported storage 'gs'"),
    ],
)
def test_a_source_that_cannot_be_listed_names_it_and_the_cause(s3_env: str, url: str, expected: str):
    with pytest.raises(SourceError, match=expected):
        list_source(url)


@pytest.mark.s3
def test_an_object_that_is_gone_or_truncated_is_named_with_its_cause(s3_env: str):
    gone = SourceObject(url=f"s3://{BUCKET}/events/date=2026-01-05/part-9.parquet", size=10)
    with pytest.raises(SourceError, match=r"part-9.parquet: no such key \(or version\)"):
        open_object(gone)
    client(s3_env).put_object(Bucket=PLAIN, Key="cut/a.parquet", Body=parquet_bytes(40)[:-100])
    with pytest.raises(TableError, match=r"s3://plain-bucket/cut/a.parquet: unreadable as parquet \(Parquet magic"):
        read_all(f"s3://{PLAIN}/cut/")


@pytest.mark.s3
def test_an_unreachable_endpoint_fails_after_bounded_retries_in_one_line(monkeypatch: pytest.MonkeyPatch):
    (port,) = free_ports(1)  # nothing listens there
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "2"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SourceError) as raised:
        list_source(f"s3://{BUCKET}/events/")
    message = str(raised.value)
    assert message.startswith(f"s3://{BUCKET}/events/: the endpoint cannot be reached after 2 attempts")
    assert "\n" not in message and S3_ENV["AWS_SECRET_ACCESS_KEY"] not in message


@pytest.mark.s3
def test_access_denied_names_the_object(monkeypatch: pytest.MonkeyPatch):
    """moto checks IAM policies after the first five requests (bucket, object, user, key, policy):
    the user may list the bucket but not read its objects."""
    with moto_s3("deny-bucket", env={"INITIAL_NO_AUTH_ACTION_COUNT": "5"}) as endpoint:
        client(endpoint).put_object(Bucket="deny-bucket", Key="events/a.csv", Body=b"px_0,label\n1,0\n")
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            **{k.lower(): v for k, v in S3_ENV.items() if k != "AWS_DEFAULT_REGION"},
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
        )
        iam.create_user(UserName="lister")
        key = iam.create_access_key(UserName="lister")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:List*"], "Resource": "*"}]}
        iam.put_user_policy(UserName="lister", PolicyName="list-only", PolicyDocument=json.dumps(policy))
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        monkeypatch.setenv("AWS_DEFAULT_REGION", S3_ENV["AWS_DEFAULT_REGION"])
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        (listed,) = list_source("s3://deny-bucket/events/")
        with pytest.raises(SourceError, match=r"^s3://deny-bucket/events/a.csv: access denied") as raised:
            read_all([listed])
        assert key["SecretAccessKey"] not in str(raised.value)


def test_s3_settings_carry_no_credentials():
    options = sources.s3_options({**S3_ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_MAX_ATTEMPTS": "3"})
    assert options["endpoint_url"] == "http://127.0.0.1:9000"
    assert options["config_kwargs"]["retries"] == {"mode": "standard", "max_attempts": 3}
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in repr(options)

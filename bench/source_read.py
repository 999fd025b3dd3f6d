"""Reading the raw table from a bucket against reading the same files from a local folder.

Writes an MNIST-shaped table (784 uint8 pixels + label) as Parquet partitions into a folder and
into a versioned bucket of moto's S3 server on 127.0.0.1, then streams both the way clean does
(`pipeline.batches.open_source(...).batches()`) and prints rows/s of each and the ratio
bucket / local, measured in the same run. moto serves over HTTP from Python on this machine, so
the ratio bounds what the S3 path adds here; a real endpoint adds network time instead.

    python bench/source_read.py [--rows 60000] [--parts 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(rows, 784), dtype=np.uint8)
    columns = {f"px_{i}": pa.array(pixels[:, i]) for i in range(784)}
    return pa.table({**columns, "label": pa.array(rng.integers(0, 10, rows, dtype=np.int64))})


def read_all(source, contract) -> tuple[int, float]:
    from pipeline import batches

    started = time.perf_counter()
    rows = sum(b.num_rows for b in batches.open_source(source, contract, 16).batches())
    return rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import boto3
    from support import S3_ENV, moto_s3

    from pipeline.params import DataParams

    contract = DataParams(
        source="unused", label="label", feature_prefix="px_", image_shape=[28, 28], classes=list(range(10))
    )
    with tempfile.TemporaryDirectory() as tmp, moto_s3("bench-bucket") as endpoint:
        os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint})
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=S3_ENV["AWS_DEFAULT_REGION"])
        s3.put_bucket_versioning(Bucket="bench-bucket", VersioningConfiguration={"Status": "Enabled"})
        per_part = args.rows // args.parts
        for part in range(args.parts):
            buffer = io.BytesIO()
            pq.write_table(table(per_part, part), buffer, row_group_size=65_536)
            key = f"events/part={part}/data.parquet"
            (Path(tmp) / key).parent.mkdir(parents=True)
            (Path(tmp) / key).write_bytes(buffer.getvalue())
            s3.put_object(Bucket="bench-bucket", Key=key, Body=buffer.getvalue())
        local, bucket = [], []
        for _ in range(args.repeats):  # interleaved, so that load on the machine hits both alike
            local.append(read_all(Path(tmp) / "events", contract))
            bucket.append(read_all("s3://bench-bucket/events/", contract))
    rows = local[0][0]
    assert all(r == rows for r, _ in local + bucket)
    best_local, best_bucket = min(t for _, t in local), min(t for _, t in bucket)
    print(f"{rows} rows x 785 columns in {args.parts} Parquet objects, best of {args.repeats}")
    print(f"local folder : {rows / best_local:12,.0f} rows/s ({best_local:.2f} s)")
    print(f"moto S3      : {rows / best_bucket:12,.0f} rows/s ({best_bucket:.2f} s)")
    print(f"bucket / local time: {best_bucket / best_local:.2f}x")


if __name__ == "__main__":
    main()

"""Each run reads a pinned input: a `data.source` in object storage is listed once, when the run's
commit is prepared, and the run reads exactly that listing.

`pin_checkout` lists the bucket prefix (each object's key, size, version id or ETag, partition),
writes the listing to `PIN_FILE` in the checkout and points the checkout's `data.source` at it. The
run's commit then holds both: DVC tracks the small pin file as the clean stage's input (it never
hashes the bucket itself, which would read every object), and as a params file of clean's, so
`dvc.lock` names every object (URL, version id or ETag, size) beside the pin's hash; the model card
lists the same objects, and the published tag `model-v<N>` keeps the pin beside the lock.
The same listing writes the same bytes, so an unchanged prefix changes nothing and DVC reruns
nothing. A local `data.source` (the embedded data set, a folder every worker mounts) is left as
it is: DVC hashes it as before, and the pin file holds no objects.

The bucket's credentials come from the Airflow Connection `airflow.source_conn_id` (`aws_default`;
`connection_env` reads it as Airflow's Amazon provider does) or the worker's own environment.

`python -m devtools pin` does the same to a checkout by hand (what `dvc update` is to an
import): a person pins, then `dvc repro` reads the pinned objects.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from orchestration.remote import redact
from orchestration.workspace import set_param
from pipeline import sources
from pipeline.params import load_params

log = logging.getLogger(__name__)

PIN_FILE = "source.pin.json"  # in the project root: git tracks it (data/ is DVC's); dvc.yaml names it too


def pin_checkout(root: Path) -> dict[str, Any] | None:
    """Pin the checkout's `data.source` when it is a URL (or a pin: listed again from its URL);
    returns what was pinned (source, objects, bytes, whether the pin changed), None for a local
    source."""
    params_path = root / "params.yaml"
    source = load_params(params_path).data.source
    if not (sources.is_remote(source) or sources.is_pin(source)):
        sources.write_pin(root / PIN_FILE, sources.NO_PIN)  # dvc.lock then lists no objects, not stale ones
        return None
    pinned = sources.pin(source if sources.is_remote(source) else root / source)
    changed = sources.write_pin(root / PIN_FILE, pinned)
    if source != PIN_FILE:
        params_path.write_text(set_param(params_path.read_text(), "data", "source", PIN_FILE))
    summary = {
        "source": redact(pinned.source),
        "pin": PIN_FILE,
        "objects": len(pinned.objects),
        "bytes": pinned.total_bytes,
        "changed": changed,
    }
    log.info(
        "pinned %s: %d objects, %d bytes%s",
        summary["source"],
        summary["objects"],
        summary["bytes"],
        "" if changed else " (unchanged since the last pin)",
    )
    return summary


def connection_env(connection: Mapping[str, Any] | None) -> dict[str, str]:
    """AWS_* variables from an Airflow Connection, read the way Airflow's Amazon provider reads
    `aws_default`: login = access key id, password = secret access key; extra `region_name`,
    `endpoint_url` (or `service_config.s3.endpoint_url`), `aws_session_token`. {} for none. They
    go into a task's environment for the stage commands, never into a file or a log."""
    if not connection:
        return {}
    extra = connection.get("extra") or {}
    service = ((extra.get("service_config") or {}).get("s3") or {}) if isinstance(extra, Mapping) else {}
    values = {
        "AWS_ACCESS_KEY_ID": connection.get("login"),
        "AWS_SECRET_ACCESS_KEY": connection.get("password"),
        "AWS_SESSION_TOKEN": extra.get("aws_session_token"),
        "AWS_DEFAULT_REGION": extra.get("region_name"),
        "AWS_ENDPOINT_URL_S3": service.get("endpoint_url") or extra.get("endpoint_url"),
    }
    return {key: str(value) for key, value in values.items() if value}


def source_env(conn_id: str) -> dict[str, str]:
    """AWS_* variables for a data source in S3 from the Airflow Connection `conn_id` (as Airflow's
    Amazon provider reads `aws_default`); {} without one: the worker's own environment then."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return {}
    log.info("data source credentials from Airflow Connection %r", conn_id)
    return connection_env({"login": conn.login, "password": conn.password, "extra": conn.extra_dejson})


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block (what DVC passes on to a stage command), then each
    variable as it was before: removed, or its earlier value back."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

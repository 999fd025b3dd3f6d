"""Loading stored versions on a Triton server and checking them: the building blocks of a push.

A stored version is loaded with its bytes sent in the load request (Triton never reads the
repository during a switch), verified under a staging name no user request names
(`<model>.staging`), and smoke-tested with its golden samples. A failed load leaves an error in
Triton's index that makes the whole server NOT ready (strict readiness); the helpers here clear it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from pipeline.candidate import GoldenSamples
from serving.client import INTERNAL_REQUEST_ID, TritonClient
from serving.errors import PushError
from serving.repository import TritonRepository, config_json, pin_versions

log = logging.getLogger(__name__)

T = TypeVar("T")
STAGING_SUFFIX = ".staging"  # '.' cannot occur in our model names, so no model is ever called this

# Loaded once at a failed staging version so that Triton forgets the failure (see drop_staging).
PLACEHOLDER_MODEL = b"""
class TritonPythonModel:
    def execute(self, requests):
        return []
"""


def staging_name(name: str) -> str:
    return f"{name}{STAGING_SUFFIX}"


def golden_inputs(golden: GoldenSamples) -> np.ndarray | dict[str, np.ndarray]:
    """golden.json's inputs as a client sends them: float32 rows, or {input name: rows} for a
    model with several inputs (a mixed table's numbers and category strings)."""
    if isinstance(golden.inputs, dict):
        types = golden.input_datatypes or {}
        return {
            name: np.asarray(rows, dtype=object if types.get(name) == "BYTES" else np.float32)
            for name, rows in golden.inputs.items()
        }
    return np.asarray(golden.inputs, dtype=np.float32)


def smoke_test(client: TritonClient, name: str, version: int, golden: GoldenSamples) -> float:
    """Golden inputs through `version`; returns the max abs difference over every output golden.json
    lists (`output_name`, then any `more_outputs`), raises if one is above atol."""
    inputs = golden_inputs(golden)
    outputs = {golden.output_name: golden.outputs, **(golden.more_outputs or {})}
    diffs: list[float] = []
    for output_name, values in outputs.items():
        expected = np.asarray(values, dtype=np.float64)
        got = client.infer(
            name,
            inputs,
            version=version,
            input_name=golden.input_name,
            output_name=output_name,
            request_id=INTERNAL_REQUEST_ID,
        )
        what = "" if not diffs else f" {output_name}"  # the first output's messages stay as they were
        if got.shape != expected.shape:
            raise PushError(
                f"smoke test: version {version} returned{what} shape {got.shape}, golden.json expects {expected.shape}"
            )
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        atol = golden.atol
        if not diff <= atol:
            raise PushError(
                f"smoke test: version {version} differs from the golden{what} outputs by {diff:.3g} > atol {atol:g}"
            )
        diffs.append(diff)
    return max(diffs)


def wait_version_ready(client: TritonClient, name: str, version: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not client.model_ready(name, version):
        if time.monotonic() > deadline:
            raise PushError(f"version {version} of {name} was not ready within {timeout_s:.0f}s")
        time.sleep(0.1)


def wait_unloaded(client: TritonClient, name: str, timeout_s: float) -> None:
    """Wait until no version of `name` is UNLOADING: with strict readiness the server reports
    NOT ready meanwhile, and the old version's processes are only gone afterwards."""
    deadline = time.monotonic() + timeout_s
    while any(e.get("name") == name and e.get("state") == "UNLOADING" for e in client.repository_index()):
        if time.monotonic() > deadline:
            log.warning("an old version of %s is still unloading after %.0fs", name, timeout_s)
            return
        time.sleep(0.05)


def served_versions(client: TritonClient, name: str) -> list[int]:
    """The versions of `name` the server has READY: what serves now, whatever the repository says."""
    return sorted(
        int(entry["version"])
        for entry in client.repository_index()
        if entry.get("name") == name and entry.get("state") == "READY" and str(entry.get("version", "")).isdigit()
    )


def load_versions(
    client: TritonClient, repo: TritonRepository, name: str, config_of: int, versions: list[int], timeout_s: float
) -> None:
    """Reload `name` serving exactly `versions`, with the config stored beside version `config_of`."""
    config = pin_versions(repo.version_config(name, config_of), versions)
    client.load(name, config_json(config), timeout_s=timeout_s)


def version_files(repo: TritonRepository, name: str, version: int) -> dict[str, bytes]:
    """A stored version's model files, keyed as load_model's `files` wants them."""
    return {f"file:{version}/{rel}": data for rel, data in repo.version_files(name, version).items()}


def load_stored(
    client: TritonClient,
    repo: TritonRepository,
    name: str,
    version: int,
    timeout_s: float,
    files: dict[str, bytes] | None = None,
    as_name: str | None = None,
) -> None:
    """Load stored `version` alone (under `as_name`, if given), its bytes sent with the request.
    Triton then never reads the repository during a switch: from S3 it would download the model
    meanwhile, and requests to the serving version wait seconds for that (seen with moto)."""
    config = pin_versions(repo.version_config(name, version), [version], name=as_name)
    model = as_name or name
    client.load(model, config_json(config), timeout_s=timeout_s, files=files or version_files(repo, name, version))


def best_effort(what: str, fn: Callable[[], T]) -> T | None:
    """Run one step of an undo; a failure is logged, so that the original error is the one raised."""
    try:
        return fn()
    except Exception as error:
        log.error("%s failed: %s", what, error)
        return None


def failed_load_reason(client: TritonClient, name: str, version: int) -> str | None:
    """The error Triton still records for a version whose load failed (None if it has none)."""
    for entry in client.repository_index():
        same = entry.get("name") == name and str(entry.get("version")) == str(version)
        if same and entry.get("state") != "READY" and entry.get("reason", "unloaded") != "unloaded":
            return entry.get("reason")
    return None


def clear_failed_version(
    client: TritonClient, repo: TritonRepository, name: str, previous: int, failed: int, timeout_s: float
) -> None:
    """Triton keeps the error of a version that failed to load in its index, and with strict
    readiness (its default) reports the whole server NOT ready until that version loads: a
    Kubernetes readiness probe would then take a healthy server out of service. So the failed
    number is loaded once more holding a copy of `previous` (same outputs, so no request sees a
    difference), then serving narrows back to `previous`: the entry ends as 'unloaded'."""
    if failed_load_reason(client, name, failed) is None:
        return
    repo.copy_version(name, previous, failed)
    load_versions(client, repo, name, previous, [previous, failed], timeout_s)
    load_versions(client, repo, name, previous, [previous], timeout_s)
    wait_unloaded(client, name, timeout_s)


def wait_server_ready(client: TritonClient, timeout_s: float) -> None:
    """After an unload the server is NOT ready (strict readiness) until the model's processes
    are gone; wait for that, so that a readiness probe never sees the push."""
    deadline = time.monotonic() + timeout_s
    while not client.is_ready() and time.monotonic() < deadline:
        time.sleep(0.1)


def drop_staging(client: TritonClient, staging: str, version: int, failed: bool, timeout_s: float) -> None:
    """Unload the staging model. After a failed load Triton keeps the failure and reports the
    whole server NOT ready until that name and version load once: load a do-nothing Python model
    there first, then unload."""
    if failed:
        config = {
            "name": staging,
            "backend": "python",
            "max_batch_size": 0,
            "input": [{"name": "unused_in", "data_type": "TYPE_FP32", "dims": [1]}],
            "output": [{"name": "unused_out", "data_type": "TYPE_FP32", "dims": [1]}],
            "version_policy": {"specific": {"versions": [version]}},
            "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        }
        files = {f"file:{version}/model.py": PLACEHOLDER_MODEL}
        best_effort(
            f"clearing the failed load of {staging}",
            lambda: client.load(staging, json.dumps(config), timeout_s=timeout_s, files=files),
        )
    best_effort(f"unloading {staging}", lambda: client.unload(staging))
    if failed:  # after a success the switch runs while the staging model unloads, then waits once
        best_effort("waiting for the server to be ready", lambda: wait_server_ready(client, min(timeout_s, 30.0)))


def verify_staged(
    client: TritonClient,
    repo: TritonRepository,
    name: str,
    version: int,
    golden: GoldenSamples | None,
    timeout_s: float,
    files: dict[str, bytes] | None = None,
) -> float | None:
    """Load stored `version` under the staging name, from its stored bytes sent with the request
    (no repository write, and no user request names the staging model), smoke-test it, unload it.
    Returns the smoke test's max abs difference."""
    staging = staging_name(name)
    ok = False
    try:
        load_stored(client, repo, name, version, timeout_s, files, as_name=staging)
        wait_version_ready(client, staging, version, timeout_s)
        diff = smoke_test(client, staging, version, golden) if golden is not None else None
        ok = True
        return diff
    finally:
        drop_staging(client, staging, version, failed=not ok, timeout_s=timeout_s)

"""The sample of live requests: how the server is told to keep it, and how it is read back.

The model entry the local server runs (serving/backend/model.py) keeps a `rate` share of the
requests it answers, one row per input row, and writes them from a background thread as Parquet
parts, `<dir>/<served name>/part-<UTC time>-<pid>-<n>.parquet` (written to a temporary name, then
renamed: a reader never sees half a part). A part is written once `rotate_rows` rows wait or
`rotate_s` seconds after the previous one, and when the version unloads; at each write, parts
older than `retention_days` are deleted. The server's processes read these settings from the
environment `serving start` gives them (sample_environment), so a server started by other means
takes the same variables.

Each row: `request_id` (the request's id, which clients set to send its label later), `row`
(its index within the request), `model` (the name that answered: `<model>`, or
`<model>.champion` / `<model>.candidate` during a rollout), `version`, `time` (UTC), one list
column per model input (named as the input), `top_class` and `probabilities`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from serving.params import SampleParams

# The variables serving/backend/model.py reads (it cannot import this module: same names there).
ENV_RATE = "LIVE_SAMPLE_RATE"
ENV_DIR = "LIVE_SAMPLE_DIR"
ENV_ROTATE_ROWS = "LIVE_SAMPLE_ROTATE_ROWS"
ENV_ROTATE_S = "LIVE_SAMPLE_ROTATE_S"
ENV_RETENTION_DAYS = "LIVE_SAMPLE_RETENTION_DAYS"
ENV_NAMES = (ENV_RATE, ENV_DIR, ENV_ROTATE_ROWS, ENV_ROTATE_S, ENV_RETENTION_DAYS)
PART_GLOB = "part-*.parquet"


def sample_environment(params: SampleParams) -> dict[str, str]:
    """The variables that tell the server's model entries what to keep and where (none: off)."""
    if params.rate == 0.0:
        return {}
    return {
        ENV_RATE: repr(params.rate),
        ENV_DIR: str(Path(params.dir).resolve()),
        ENV_ROTATE_ROWS: str(params.rotate_rows),
        ENV_ROTATE_S: repr(params.rotate_s),
        ENV_RETENTION_DAYS: repr(params.retention_days),
    }


def with_sample(env: dict[str, str], params: SampleParams) -> dict[str, str]:
    """`env` with the sample variables of `params` only (an inherited one never turns sampling on)."""
    return {key: value for key, value in env.items() if key not in ENV_NAMES} | sample_environment(params)


def sample_parts(folder: str | Path, name: str) -> list[Path]:
    """The written parts of one served name, oldest first."""
    return sorted((Path(folder) / name).glob(PART_GLOB))


def read_sample(folder: str | Path, name: str) -> pa.Table:
    """Every kept row of one served name (an empty table when nothing was kept yet)."""
    parts = sample_parts(folder, name)
    if not parts:
        return pa.table({})
    return ds.dataset([str(p) for p in parts], format="parquet").to_table()

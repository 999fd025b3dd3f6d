"""The engines that run the data stages (clean, split): `local` streams the table through one
process in bounded memory; `spark` runs the same contract on Apache Spark. Both write the same
files through `pipeline.sinks`, so nothing downstream knows which one ran."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from pipeline.sinks import Sink

# Opens the sink of one output ("clean" or "quarantine") for rows of the given schema.
OpenSink = Callable[[str, pa.Schema], Sink]


def quarantine_schema(raw: pa.Schema) -> pa.Schema:
    """The quarantine table: the raw row's number, its columns as they came, and a reason."""
    return pa.schema([pa.field("row", pa.int64()), *raw, pa.field("reason", pa.string())])

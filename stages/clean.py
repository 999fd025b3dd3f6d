"""clean: validate the raw table against the data contract and quarantine bad rows.

The table streams through in batches (`clean.batch_mb`), unit of work by unit (`engine.unit_mb`),
on the engine named in `engine:` (`pipeline/engines`; docs/engines.md). A bad row (a missing or
unknown label, a gap, a value out of range or not a number, an exact duplicate) goes to the
quarantine with its reason. Table-level failures (unreadable or empty file, missing or unexpected
column, wrong type, too few rows, too many duplicates) and a quarantined share above
`clean.max_quarantine_share` stop the stage with a message naming the check, the column and an
example value. Nothing is written then: the outputs (folders of Parquet parts, one per unit)
appear only once every row has been checked and written.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline import atomic, batches
from pipeline.engines import local
from pipeline.engines.outputs import FolderOutputs, MemoryOutputs
from pipeline.params import CleanParams, DataParams, EngineParams, Params
from pipeline.sources import SourceError
from pipeline.tables import TableError
from pipeline.validation import ValidationFailed
from stages import _cli

__all__ = ["CleanResult", "ValidationFailed", "main", "run", "run_source"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CleanResult:
    clean: pd.DataFrame
    quarantine: pd.DataFrame
    metrics: dict[str, Any]
    report_html: str


def run(
    raw: pd.DataFrame | pa.Table,
    contract: DataParams,
    params: CleanParams,
    batch_rows: int | None = None,
    engine: EngineParams | None = None,
) -> CleanResult:
    """Validate an in-memory table the way the stage validates a file: batch by batch (`batch_rows`
    rows each; default from clean.batch_mb), into memory, on the local engine."""
    stream = batches.from_table(raw, batch_rows or 1, contract)
    if batch_rows is None:
        stream = batches.from_table(raw, batches.rows_per_batch(stream.schema, params.batch_mb), contract)
    with tempfile.TemporaryDirectory(prefix="clean-") as work:
        outputs = MemoryOutputs(work)
        metrics, report = local.clean(stream, contract, params, engine or EngineParams(), outputs)
    return CleanResult(outputs.table("clean").to_pandas(), outputs.table("quarantine").to_pandas(), metrics, report)


def run_source(
    source: str, data: DataParams, params: CleanParams, engine: EngineParams, out: str, quarantine: str
) -> tuple[dict[str, Any], str]:
    """Clean a CSV/Parquet file, folder, bucket prefix or pin of one (`pipeline.sources`) into the
    tables (folders of Parquet parts) `out` and `quarantine` on the engine `engine` names; returns
    (metrics, report)."""
    if engine.name == "spark":
        from pipeline.engines import spark

        return spark.clean(source, data, params, engine, {"clean": out, "quarantine": quarantine})
    stream = batches.open_source(source, data, params.batch_mb)
    return local.clean(stream, data, params, engine, FolderOutputs.create({"clean": out, "quarantine": quarantine}))


def _what_happened_to_outputs() -> str:
    """Nothing is written on failure, but under `dvc repro` (which sets DVC_STAGE for the command)
    DVC has already removed the stage's outputs before it started; its cache still holds them."""
    stage = os.environ.get("DVC_STAGE")
    if stage:
        return (
            "This run wrote nothing, but DVC removed the previous outputs before the stage started; "
            f"`dvc checkout {stage}` restores those of the last good run (recorded in dvc.lock)."
        )
    return "This run wrote nothing: the previous outputs are untouched."


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--raw", help="raw table, bucket prefix or pin (default: data.source in params)")
    p.add_argument("--out", required=True, help="table (a folder of Parquet parts) of the rows that passed")
    p.add_argument(
        "--quarantine", required=True, help="table (a folder of Parquet parts) of rejected rows with a reason each"
    )
    p.add_argument("--metrics", required=True, help="JSON metrics file")
    p.add_argument("--report", required=True, help="HTML validation report")

    def body(args, params: Params):
        try:
            metrics, report = run_source(
                args.raw or params.data.source, params.data, params.clean, params.engine, args.out, args.quarantine
            )
        except ValidationFailed as error:
            raise ValidationFailed(f"{error} {_what_happened_to_outputs()}") from None
        except SourceError as error:  # the data could not be reached: no table to validate yet
            raise SourceError(f"raw data cannot be read: {error}. {_what_happened_to_outputs()}") from None
        except TableError as error:
            raise ValidationFailed(f"raw table failed validation: {error}. {_what_happened_to_outputs()}") from None
        # The tables are in place (each renamed atomically once every check had passed).
        atomic.write_text(args.report, report)
        atomic.write_json(args.metrics, metrics)

    _cli.main("clean", body, p.parse_args())


if __name__ == "__main__":
    main()

"""embed: materialise a data set that ships inside scikit-learn as the raw table.

The rows are cut into `embed.batches` dated batches (a week apart, from `embed.first_batch`);
with `embed.as_of` set, only the batches dated on or before it are written. That simulates data
arriving over time, so successive scheduled runs see new data.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from pipeline.params import DataParams, EmbedParams
from pipeline.tables import compact, write_parquet
from stages import _cli

log = logging.getLogger(__name__)


def load_bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a scikit-learn bundled data set (no network)."""
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }[name]
    bunch = loader()
    return bunch.data, bunch.target


def batch_dates(params: EmbedParams) -> list[dt.date]:
    first = dt.date.fromisoformat(params.first_batch)
    return [first + dt.timedelta(weeks=i) for i in range(params.batches)]


def run(embed: EmbedParams, data: DataParams) -> pd.DataFrame:
    """The raw table: label column, feature columns `<prefix><i>`, rows of the batches due."""
    features, labels = load_bundled(embed.dataset)
    prefix = data.feature_prefix or "x"
    table = pd.DataFrame({data.label: labels})
    table = pd.concat(
        [
            table,
            pd.DataFrame({f"{prefix}{i}": compact(pd.Series(features[:, i])) for i in range(features.shape[1])}),
        ],
        axis=1,
    )
    table[data.label] = compact(table[data.label])
    # Batch b holds rows b, b+batches, ...: every batch has every class in about equal share.
    batch_of_row = np.arange(len(table)) % embed.batches
    dates = batch_dates(embed)
    due = len(dates) if embed.as_of is None else sum(d <= dt.date.fromisoformat(embed.as_of) for d in dates)
    if due == 0:
        raise _cli.StageError(
            f"embed.as_of={embed.as_of} is before the first batch ({dates[0]}); no data has arrived yet"
        )
    log.info("%s: %d of %d batches due (up to %s)", embed.dataset, due, len(dates), dates[due - 1])
    return table[batch_of_row < due].reset_index(drop=True)


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="Parquet file to write")

    def body(args, params):
        table = run(params.embed, params.data)
        write_parquet(table, args.out)
        log.info("wrote %s (%d rows x %d columns)", args.out, *table.shape)

    _cli.main("embed", body, p.parse_args())


if __name__ == "__main__":
    main()

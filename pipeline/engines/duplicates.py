"""Exact duplicates across the whole table, found from the rows' 64-bit hashes after the first pass.

A row is a duplicate when a row before it (in source order: by unit, then position in the unit)
has the same hash (`pipeline.rowhash`: equal values give equal hashes; two different rows share
one with probability about 2^-64). The first of each set of equal rows stays; the others go to
quarantine.

The local engine writes each row's hash to one of 256 bucket files by the hash's top bits
(`HashBuckets`), then reads the buckets one at a time: equal hashes share a bucket, so memory is
one bucket (1/256 of the table's hashes), not every hash at once. Spark finds the same rows with a
window over the hashes, on the executors (`pipeline.engines.spark`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BUCKET_BITS = 8
RECORD = np.dtype([("hash", "<u8"), ("unit", "<i4"), ("row", "<i8"), ("bad", "?")])


@dataclass(frozen=True)
class Duplicates:
    """What the duplicates are: their count, how many fail no other check, the first one."""

    count: int = 0
    only_duplicate: int = 0  # duplicates that are quarantined for that alone
    first: tuple[int, int] | None = None  # (unit, row in the unit)
    by_unit: dict[int, np.ndarray] = field(default_factory=dict)  # local engine: unit -> rows, ascending


class HashBuckets:
    """Row hashes in bucket files under `folder`, written as the first pass goes."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files = [open(self.folder / f"bucket-{b:03d}.bin", "ab") for b in range(1 << BUCKET_BITS)]  # noqa: SIM115

    def write(self, unit: int, start: int, hashes: np.ndarray, bad: np.ndarray) -> None:
        records = np.empty(len(hashes), RECORD)
        records["hash"], records["unit"], records["bad"] = hashes, unit, bad
        records["row"] = np.arange(start, start + len(hashes))
        bucket = (hashes >> np.uint64(64 - BUCKET_BITS)).astype(np.intp)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange((1 << BUCKET_BITS) + 1))
        for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            if hi > lo:
                self._files[b].write(records[order[lo:hi]].tobytes())

    def close(self) -> None:
        for file in self._files:
            file.close()

    def duplicates(self) -> Duplicates:
        """Read the buckets one by one; every row whose hash an earlier row has."""
        self.close()
        found: list[np.ndarray] = []
        for b in range(1 << BUCKET_BITS):
            records = np.fromfile(self.folder / f"bucket-{b:03d}.bin", RECORD)
            if len(records) < 2:
                continue
            records = records[np.lexsort((records["row"], records["unit"], records["hash"]))]
            repeat = np.zeros(len(records), bool)
            repeat[1:] = records["hash"][1:] == records["hash"][:-1]
            if repeat.any():
                found.append(records[repeat])
        if not found:
            return Duplicates()
        dups = np.concatenate(found)
        dups = dups[np.lexsort((dups["row"], dups["unit"]))]
        units, starts = np.unique(dups["unit"], return_index=True)
        by_unit = dict(zip(units.tolist(), np.split(dups["row"], starts[1:]), strict=True))
        first = (int(dups["unit"][0]), int(dups["row"][0]))
        return Duplicates(len(dups), int((~dups["bad"]).sum()), first, by_unit)

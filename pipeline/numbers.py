"""Text in a numeric column: the numbers it holds, and the values that are not numbers.

A user's CSV export with a stray word in a numeric column (`px_5 = "oops"`), or a Parquet file
whose numeric column was written as text, must not fail the whole table: each value that does not
parse becomes a gap in the typed column, and the row is quarantined with a reason naming the
column and the value (`pipeline.validation`). The spellings a CSV reader takes for a missing value
(`""`, `NA`, `nan`, `null`, ...) are gaps, not bad values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

MISSING = pa.array(pacsv.ConvertOptions().null_values, pa.string())  # pyarrow's CSV defaults
# What Arrow's own string-to-double cast accepts (checked before it runs, so one bad value does
# not fail the batch): decimal and exponent notation, inf, infinity and nan in any case.
NUMBER = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)$"
SHOWN_CHARS = 40  # a longer bad value is cut in the reason


@dataclass(frozen=True)
class Unparsed:
    """The values of one column of a batch that are not numbers: their rows and their text."""

    rows: np.ndarray  # int64 positions in the batch, ascending
    texts: list[str]


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def parse(column: pa.Array) -> tuple[pa.Array, Unparsed | None]:
    """A text column as float64 (a gap where the text is missing or not a number) and the values
    that are not numbers (None when every value is a number or a gap)."""
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    text = pc.if_else(pc.is_in(text, MISSING), pa.scalar(None, pa.string()), text)
    try:
        return pc.cast(text, pa.float64()), None
    except pa.ArrowInvalid:
        pass
    number = pc.fill_null(pc.match_substring_regex(text, NUMBER, ignore_case=True), True)
    values = pc.cast(pc.if_else(number, text, pa.scalar(None, pa.string())), pa.float64())
    rows = np.flatnonzero(~number.to_numpy(zero_copy_only=False))
    texts = text.take(pa.array(rows)).to_pylist()
    return values, Unparsed(rows, texts)


def shown(column: str, text: str) -> str:
    """`px_5: "oops"`: a column and one of its values as a reason shows them."""
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS] + "..."
    return f"{column}: {json.dumps(text, ensure_ascii=False)}"

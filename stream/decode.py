"""Kafka records -> one Polars frame of readings, for a whole poll batch at once.

Each record value is NDJSON, one flat line per reading (see meetnet/wire.py), so a batch is
decoded by joining the values with newlines and letting Polars parse them in one call. Which
record a line came from is recovered from the line count of each value (``bytes.count`` per
record, NumPy ``repeat``), never from Python per reading.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass

import numpy as np
import polars as pl

LINE_SCHEMA = pl.Schema(
    {
        "sensor": pl.String(),
        "rx": pl.Int64(),
        "metric": pl.String(),
        "ts": pl.String(),  # epoch-ms integers arrive as their digits; parsed in validate.py
        "value": pl.Float64(),
    }
)

# Columns of a decoded batch: ``rec`` is the index of the Kafka record in the batch.
READINGS_SCHEMA = pl.Schema({"rec": pl.UInt32(), **LINE_SCHEMA})


@dataclass(frozen=True)
class Decoded:
    readings: pl.DataFrame
    undecodable: list[int]  # indices of records that are not meetnet readings records


def _parse(values: list[bytes]) -> tuple[pl.DataFrame, np.ndarray]:
    """Parse records; return the lines and, per line, its record's position in ``values``."""
    # map() over the C method: no Python frame per record
    newlines = map(bytes.count, values, itertools.repeat(b"\n"))
    lines = np.fromiter(newlines, dtype=np.int64, count=len(values)) + 1
    frame = pl.read_ndjson(io.BytesIO(b"\n".join(values)), schema=LINE_SCHEMA)
    if frame.height != int(lines.sum()):
        raise ValueError("line count mismatch")  # blank lines or a foreign format
    return frame, np.repeat(np.arange(len(values), dtype=np.uint32), lines)


def decode(values: list[bytes]) -> Decoded:
    """Decode record values; records that do not parse are reported, never raised."""
    if not values:
        return Decoded(pl.DataFrame(schema=READINGS_SCHEMA), [])
    bad: list[int] = []
    try:
        frame, rec = _parse(values)
    except Exception:
        # Rare path (a foreign producer wrote to the topic): find the culprits one by one.
        good: list[int] = []
        for i, v in enumerate(values):
            try:
                _parse([v])
                good.append(i)
            except Exception:
                bad.append(i)
        if not good:
            return Decoded(pl.DataFrame(schema=READINGS_SCHEMA), bad)
        frame, local = _parse([values[i] for i in good])
        rec = np.asarray(good, dtype=np.uint32)[local]
    frame = frame.with_columns(pl.Series("rec", rec, dtype=pl.UInt32)).select(list(READINGS_SCHEMA))
    # Valid JSON that is not a readings line (no sensor or metric): its whole record is
    # reported, never silently dropped.
    foreign = pl.col("sensor").is_null() | pl.col("metric").is_null()
    foreign_recs = frame.filter(foreign)["rec"].unique().to_list()
    if foreign_recs:
        bad = sorted({*bad, *foreign_recs})
        frame = frame.filter(~pl.col("rec").is_in(foreign_recs))
    return Decoded(frame, bad)

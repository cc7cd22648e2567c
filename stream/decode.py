"""Kafka records -> one Polars frame of readings, for a whole poll batch at once.

Record values are single JSON lines (see meetnet/wire.py), so a batch is decoded by joining
them into NDJSON and letting Polars parse it in one call; singles and batch payloads are then
flattened with expressions. No Python runs per reading.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import polars as pl

_READING: pl.DataType = pl.Struct({"metric": pl.String, "ts": pl.String, "value": pl.Float64})
_PAYLOAD: pl.DataType = pl.Struct(
    {
        "sensor": pl.String,
        "metric": pl.String,
        "ts": pl.String,  # epoch-ms integers arrive as their digits; parsed in validate.py
        "value": pl.Float64,
        "readings": pl.List(_READING),
    }
)
_MSGS: pl.DataType = pl.List(_PAYLOAD)
RECORD_SCHEMA = pl.Schema({"sensor": pl.String(), "rx": pl.Int64(), "msgs": _MSGS})

# Columns of a decoded batch: ``rec`` is the index of the Kafka record in the batch.
READINGS_SCHEMA = pl.Schema(
    {
        "rec": pl.UInt32,
        "sensor": pl.String,
        "rx": pl.Int64,
        "metric": pl.String,
        "ts": pl.String,
        "value": pl.Float64,
    }
)


@dataclass(frozen=True)
class Decoded:
    readings: pl.DataFrame
    undecodable: list[int]  # indices of records that are not meetnet readings records


def _parse(values: list[bytes]) -> pl.DataFrame:
    return pl.read_ndjson(io.BytesIO(b"\n".join(values)), schema=RECORD_SCHEMA)


def decode(values: list[bytes]) -> Decoded:
    """Decode record values; records that do not parse are reported, never raised."""
    if not values:
        return Decoded(pl.DataFrame(schema=READINGS_SCHEMA), [])
    bad: list[int] = []
    try:
        if any(b"\n" in v for v in values):
            raise ValueError("a record spans several lines")
        frame = _parse(values)
        if frame.height != len(values):
            raise ValueError("record count mismatch")
        index = pl.Series("rec", range(len(values)), dtype=pl.UInt32)
    except Exception:
        # Rare path (a foreign producer wrote to the topic): find the culprits one by one.
        good_idx: list[int] = []
        for i, v in enumerate(values):
            try:
                if b"\n" in v or _parse([v]).height != 1:
                    raise ValueError
                good_idx.append(i)
            except Exception:
                bad.append(i)
        if not good_idx:
            return Decoded(pl.DataFrame(schema=READINGS_SCHEMA), bad)
        frame = _parse([values[i] for i in good_idx])
        index = pl.Series("rec", good_idx, dtype=pl.UInt32)
    frame = frame.with_columns(index)
    # Valid JSON that is not a readings record (no sensor, no msgs): report it, never drop it.
    foreign = pl.col("sensor").is_null() | pl.col("msgs").is_null()
    bad = sorted([*bad, *frame.filter(foreign)["rec"].to_list()])
    return Decoded(_flatten(frame.filter(~foreign)), bad)


def _flatten(frame: pl.DataFrame) -> pl.DataFrame:
    msgs = frame.explode("msgs").filter(pl.col("msgs").is_not_null())
    msg = pl.col("msgs").struct
    singles = msgs.filter(msg.field("readings").is_null()).select(
        "rec",
        "sensor",
        "rx",
        msg.field("metric").alias("metric"),
        msg.field("ts").alias("ts"),
        msg.field("value").alias("value"),
    )
    batched = (
        msgs.filter(msg.field("readings").is_not_null())
        .select("rec", "sensor", "rx", msg.field("readings").alias("r"))
        .explode("r")
        .filter(pl.col("r").is_not_null())
        .select(
            "rec",
            "sensor",
            "rx",
            pl.col("r").struct.field("metric").alias("metric"),
            pl.col("r").struct.field("ts").alias("ts"),
            pl.col("r").struct.field("value").alias("value"),
        )
    )
    out = pl.concat([singles, batched], how="vertical")
    return out.cast(READINGS_SCHEMA).sort("rec", maintain_order=True)

"""Anomaly flags, detector snapshots and the detector's view of the registry, in PostgreSQL.

Every function works inside a transaction the caller owns (``async with conn.transaction()``)
and commits nothing itself, so a batch's readings, its flags and the detector state it led
to are committed together, or not at all.

Upserts are monotone: a flag row only moves forward (later last reading, more readings,
open -> resolved). A replayed older batch, or a detector restored from an older snapshot that
re-processes readings, rewrites the same values or older ones, which are ignored.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from stream.detect.detector import REGISTRY_SCHEMA
from stream.detect.state import FORMAT

log = logging.getLogger(__name__)

_COLUMNS = (
    "anomaly_id", "started_at", "series_id", "sensor_id", "metric", "kind", "severity", "score",
    "state", "ended_at", "resolved_at", "first_ts", "last_ts", "n_readings", "first_value",
    "peak_value", "peak_ts", "baseline", "statistic", "explanation", "config_version",
)  # fmt: skip
_MUTABLE = (
    "severity", "score", "state", "ended_at", "resolved_at", "last_ts", "n_readings",
    "peak_value", "peak_ts", "baseline", "statistic", "explanation", "config_version",
)  # fmt: skip
# The incoming version of a flag wins when it is at least as far along as the stored one.
_NEWER = sql.SQL(
    "(EXCLUDED.last_ts, EXCLUDED.state = 'resolved', EXCLUDED.n_readings) "
    ">= (a.last_ts, a.state = 'resolved', a.n_readings)"
)
UPSERT_FLAG = sql.SQL(
    "INSERT INTO anomalies AS a ({cols}) VALUES ({values}) "
    "ON CONFLICT (anomaly_id, started_at) DO UPDATE SET {sets}, "
    "series_id = COALESCE(EXCLUDED.series_id, a.series_id), updated_at = now()"
).format(
    cols=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
    values=sql.SQL(", ").join([sql.Placeholder()] * len(_COLUMNS)),
    sets=sql.SQL(", ").join(
        sql.SQL("{c} = CASE WHEN {newer} THEN EXCLUDED.{c} ELSE a.{c} END").format(
            c=sql.Identifier(c), newer=_NEWER
        )
        for c in _MUTABLE
    ),
)
SAVE_SNAPSHOT = (
    "INSERT INTO detector_snapshots (detector, kafka_offset, format, bytes, state) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (detector) DO UPDATE SET "
    "kafka_offset = EXCLUDED.kafka_offset, format = EXCLUDED.format, bytes = EXCLUDED.bytes, "
    "state = EXCLUDED.state, taken_at = now()"
)
LOAD_SNAPSHOT = (
    "SELECT kafka_offset, format, state, taken_at FROM detector_snapshots WHERE detector = %s"
)
# What the detector needs to know about every registered series (retired sensors excluded).
REGISTRY = """
SELECT s.sensor_id AS sensor, m.metric, m.min_value, m.max_value, m.interval_s::float8,
       t.detection::text AS detection, m.unit, ser.series_id::int8
FROM sensors s
JOIN sensor_types t USING (type_id)
JOIN sensor_type_metrics m USING (type_id)
LEFT JOIN series ser ON ser.sensor_id = s.sensor_id AND ser.metric = m.metric
WHERE s.status <> 'retired'
"""


def _value(v: Any) -> Any:
    # PostgreSQL takes NaN in double precision columns, but "unknown" is what NaN means here.
    return None if isinstance(v, float) and math.isnan(v) else v


def flag_rows(flags: pl.DataFrame) -> list[tuple[Any, ...]]:
    """The parameter rows of the upsert (flags are few per batch: one per episode touched)."""
    cols = flags.rename({"sensor": "sensor_id"}).select(_COLUMNS)
    return [tuple(_value(v) for v in row) for row in cols.iter_rows()]


async def write_flags(conn: psycopg.AsyncConnection, flags: pl.DataFrame) -> int:
    """Upsert a batch's flags (``Detection.flags``) inside the caller's transaction. A batch
    may hold several versions of one flag (several chunks): the upsert keeps the newest."""
    if flags.height == 0:
        return 0
    async with conn.cursor() as cur:
        await cur.executemany(UPSERT_FLAG, flag_rows(flags))
    return flags.height


def write_flags_sync(conn: psycopg.Connection, flags: pl.DataFrame) -> int:
    """:func:`write_flags` for synchronous connections (tools, tests)."""
    if flags.height == 0:
        return 0
    with conn.cursor() as cur:
        cur.executemany(UPSERT_FLAG, flag_rows(flags))
    return flags.height


@dataclass(frozen=True)
class Snapshot:
    state: bytes
    kafka_offset: int | None  # the partition's next offset this state has seen
    taken_at: datetime


async def save_snapshot(
    conn: psycopg.AsyncConnection, detector: str, state: bytes, kafka_offset: int | None
) -> None:
    """Store ``Detector.snapshot()`` under ``detector`` (e.g. ``<group>/<topic>/<partition>``),
    inside the caller's transaction."""
    await conn.execute(SAVE_SNAPSHOT, (detector, kafka_offset, FORMAT, len(state), state))


async def load_snapshot(conn: psycopg.AsyncConnection, detector: str) -> Snapshot | None:
    cur = await conn.execute(LOAD_SNAPSHOT, (detector,))
    row = await cur.fetchone()
    if row is None:
        return None
    offset, fmt, state, taken_at = row
    if fmt != FORMAT:
        log.warning(
            "detector snapshot has another format; starting from an empty state",
            extra={"detector": detector, "format": fmt, "expected": FORMAT},
        )
        return None
    return Snapshot(bytes(state), offset, taken_at)


async def load_registry(conn: psycopg.AsyncConnection) -> pl.DataFrame:
    """The registry as ``Detector.update_registry`` takes it."""
    cur = await conn.execute(REGISTRY)
    rows = await cur.fetchall()
    return pl.DataFrame(rows, schema=REGISTRY_SCHEMA, orient="row")

"""Writing raw readings with their rollups: series ids, then one transaction per batch.

Idempotency comes from the unique (series_id, ts) index. The fast path COPYs straight into
``readings`` inside a savepoint; only when that hits a duplicate (a replayed Kafka batch, a
re-delivered MQTT message) is the batch re-sent through a staging table with
``INSERT ... ON CONFLICT DO NOTHING RETURNING``. Replays come in bursts after a restart, so
after a conflict the merge path is used directly for a while.

Rollups are maintained in the same transaction from exactly the rows it inserted: on the fast
path that is the whole (deduplicated) batch, whose deltas can be computed before the
transaction starts (``prepare``, called by the processor while the previous batch is being
written); on the merge path it is what the ``RETURNING`` clause gives back, read as binary COPY.
A replay therefore adds nothing to the rollups, and a partly new batch adds exactly its new
rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import psycopg
from psycopg import errors

from store import rollups
from store.copy import decode_readings, readings_rows, write_rows
from stream.rollups import Deltas, Rows, deltas, sort_unique

log = logging.getLogger(__name__)

_COPY_READINGS = "COPY readings (series_id, ts, value) FROM STDIN (FORMAT BINARY)"
_COPY_STAGE = "COPY readings_stage (series_id, ts, value) FROM STDIN (FORMAT BINARY)"
_READINGS_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS readings_stage "
    "(LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_MERGE = (
    "COPY (INSERT INTO readings (series_id, ts, value) "
    "SELECT series_id, ts, value FROM readings_stage ON CONFLICT DO NOTHING "
    "RETURNING series_id, ts, value) TO STDOUT (FORMAT BINARY)"
)
_SERIES_SCHEMA = {"sensor": pl.String, "metric": pl.String, "series_id": pl.Int32}


@dataclass(frozen=True)
class WriteResult:
    rows: int  # distinct readings offered to the database
    inserted: int  # rows actually added (rows - inserted were already stored)
    path: str  # "copy" or "merge"
    late_buckets: int = 0  # rollup buckets queued for a recompute instead of merged


@dataclass(frozen=True)
class Prepared:
    """A batch ready for the database: its distinct rows, their COPY bytes and their rollup
    deltas (valid when every row gets inserted, i.e. on the fast path)."""

    rows: Rows
    copy: np.ndarray  # binary COPY tuples of rows (store.copy.readings_rows)
    deltas: Deltas


class SeriesCache:
    """(sensor, metric) -> series_id, as a frame joined onto each batch; misses go to the DB."""

    def __init__(self) -> None:
        self.frame = pl.DataFrame(schema=_SERIES_SCHEMA)
        self.version = 0  # bumped whenever ``frame`` changes

    def lookup(self, batch: pl.DataFrame) -> pl.DataFrame:
        """``batch`` with a ``series_id`` column (null where unknown), in the batch's order."""
        return batch.join(self.frame, on=["sensor", "metric"], how="left", maintain_order="left")

    async def attach(self, conn: psycopg.AsyncConnection, batch: pl.DataFrame) -> pl.DataFrame:
        """Return ``batch`` with a ``series_id`` column, creating unknown series (committed)."""
        out = self.lookup(batch)
        missing = out.filter(pl.col("series_id").is_null()).select("sensor", "metric").unique()
        if missing.height == 0:
            return out
        sensors = missing["sensor"].to_list()
        metrics = missing["metric"].to_list()
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO series (sensor_id, metric) "
                "SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING",
                (sensors, metrics),
            )
            cur = await conn.execute(
                "SELECT s.sensor_id, s.metric, s.series_id FROM series s "
                "JOIN unnest(%s::text[], %s::text[]) AS k(sensor_id, metric) "
                "USING (sensor_id, metric)",
                (sensors, metrics),
            )
            rows = await cur.fetchall()
        found = pl.DataFrame(rows, schema=_SERIES_SCHEMA, orient="row")
        self.frame = pl.concat([self.frame, found]).unique(["sensor", "metric"])
        self.version += 1
        return self.lookup(batch)


def prepare_rows(series_id: pl.Series, ts_us: pl.Series, value: pl.Series) -> Prepared:
    """Sort and deduplicate (first one in batch order wins, as in the database), encode the
    COPY, compute the rollup deltas. Pure CPU work."""
    rows = sort_unique(series_id.to_numpy(), ts_us.to_numpy(), value.to_numpy())
    return Prepared(rows, readings_rows(rows.series_id, rows.ts_us, rows.value), deltas(rows))


class ReadingsWriter:
    def __init__(self, late_horizon_s: float = 86400.0, merge_window_s: float = 60.0) -> None:
        self.series = SeriesCache()
        self.late_horizon_us = int(late_horizon_s * 1_000_000)
        self._merge_until = 0.0
        self._merge_window_s = merge_window_s
        self._temp_conn: psycopg.AsyncConnection | None = None

    async def write(
        self,
        conn: psycopg.AsyncConnection,
        batch: pl.DataFrame,
        now_us: int,
        prepared: Prepared | None = None,
    ) -> WriteResult:
        """Store ``batch`` (sensor, metric, ts_us, value) with its rollups and commit.

        Duplicates are skipped. Rollup buckets holding a reading older than the late horizon
        (before ``now_us`` - horizon) are queued for a recompute instead of merged."""
        if batch.height == 0:
            return WriteResult(0, 0, "copy")
        if prepared is None:
            with_ids = await self.series.attach(conn, batch)
            prepared = prepare_rows(with_ids["series_id"], with_ids["ts_us"], with_ids["value"])
        await self._ensure_temp_tables(conn)
        return await self._write(conn, prepared, now_us - self.late_horizon_us)

    async def _ensure_temp_tables(self, conn: psycopg.AsyncConnection) -> None:
        """Create the session's stage tables once per connection, in their own transaction,
        so that a failed batch transaction cannot take them along."""
        if self._temp_conn is conn:
            return
        async with conn.transaction():
            await conn.execute(_READINGS_STAGE_DDL)
            await conn.execute(rollups.STAGE_DDL)
        self._temp_conn = conn

    async def _write(
        self, conn: psycopg.AsyncConnection, p: Prepared, late_before_us: int
    ) -> WriteResult:
        n = len(p.rows)
        async with conn.transaction():
            if time.monotonic() >= self._merge_until:
                try:
                    # A savepoint: a conflict undoes only the COPY.
                    async with conn.transaction(), conn.cursor().copy(_COPY_READINGS) as cp:
                        await write_rows(cp, p.copy)
                except errors.UniqueViolation:
                    self._merge_until = time.monotonic() + self._merge_window_s
                    log.info("replayed readings detected; merging duplicates away")
                else:
                    late = await rollups.apply(conn, p.deltas, late_before_us)
                    return WriteResult(n, n, "copy", late)
            inserted = await self._merge(conn, p.copy)
            late = await rollups.apply(conn, deltas(inserted), late_before_us)
        return WriteResult(n, len(inserted), "merge", late)

    async def _merge(self, conn: psycopg.AsyncConnection, copy: np.ndarray) -> Rows:
        """Insert what is new of the batch; return exactly the rows inserted."""
        async with conn.cursor().copy(_COPY_STAGE) as cp:
            await write_rows(cp, copy)
        out = bytearray()
        async with conn.cursor().copy(_MERGE) as cp:
            async for chunk in cp:
                out += chunk
        return sort_unique(*decode_readings(bytes(out)))

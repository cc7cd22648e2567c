"""Writing raw readings: series ids, then one idempotent binary COPY per batch.

Idempotency comes from the unique (series_id, ts) index. The fast path COPYs straight into
``readings`` inside a savepoint; only when that hits a duplicate (a replayed Kafka batch, a
re-delivered MQTT message) is the batch re-sent through a staging table with
``INSERT ... ON CONFLICT DO NOTHING``. Replays come in bursts after a restart, so after a
conflict the merge path is used directly for a while.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import psycopg
from psycopg import errors

from store.copy import encode_readings

log = logging.getLogger(__name__)

_COPY_READINGS = "COPY readings (series_id, ts, value) FROM STDIN (FORMAT BINARY)"
_COPY_STAGE = "COPY readings_stage (series_id, ts, value) FROM STDIN (FORMAT BINARY)"
_MERGE = (
    "INSERT INTO readings (series_id, ts, value) "
    "SELECT series_id, ts, value FROM readings_stage ON CONFLICT DO NOTHING"
)
_SERIES_SCHEMA = {"sensor": pl.String, "metric": pl.String, "series_id": pl.Int32}


@dataclass(frozen=True)
class WriteResult:
    rows: int  # distinct readings offered to the database
    inserted: int  # rows actually added (rows - inserted were already stored)
    path: str  # "copy" or "merge"


class SeriesCache:
    """(sensor, metric) -> series_id, as a frame joined onto each batch; misses go to the DB."""

    def __init__(self) -> None:
        self.frame = pl.DataFrame(schema=_SERIES_SCHEMA)

    async def attach(self, conn: psycopg.AsyncConnection, batch: pl.DataFrame) -> pl.DataFrame:
        """Return ``batch`` with a ``series_id`` column, creating unknown series (committed)."""
        out = batch.join(self.frame, on=["sensor", "metric"], how="left")
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
        return batch.join(self.frame, on=["sensor", "metric"], how="left")


class ReadingsWriter:
    def __init__(self, merge_window_s: float = 60.0) -> None:
        self.series = SeriesCache()
        self._merge_until = 0.0
        self._merge_window_s = merge_window_s
        self._stage_ready = False

    async def write(self, conn: psycopg.AsyncConnection, batch: pl.DataFrame) -> WriteResult:
        """Store ``batch`` (sensor, metric, ts_us, value) and commit. Duplicates are skipped."""
        if batch.height == 0:
            return WriteResult(0, 0, "copy")
        with_ids = await self.series.attach(conn, batch)
        # A batch may hold the same reading twice (MQTT re-delivery): first one wins, as in
        # the database.
        rows = with_ids.unique(["series_id", "ts_us"], keep="first", maintain_order=True)
        buf = encode_readings(
            rows["series_id"].to_numpy(),
            rows["ts_us"].to_numpy(),
            rows["value"].to_numpy().astype(np.float64, copy=False),
        )
        try:
            return await self._write(conn, rows.height, buf)
        except BaseException:
            self._stage_ready = False  # the temp table may have gone with the rollback
            raise

    async def _write(self, conn: psycopg.AsyncConnection, n: int, buf: bytes) -> WriteResult:
        async with conn.transaction():
            if time.monotonic() >= self._merge_until:
                try:
                    # A savepoint: a conflict undoes only the COPY.
                    async with conn.transaction(), conn.cursor().copy(_COPY_READINGS) as cp:
                        await cp.write(buf)
                    return WriteResult(n, n, "copy")
                except errors.UniqueViolation:
                    self._merge_until = time.monotonic() + self._merge_window_s
                    log.info("replayed readings detected; merging duplicates away")
            inserted = await self._merge(conn, buf)
        return WriteResult(n, inserted, "merge")

    async def _merge(self, conn: psycopg.AsyncConnection, buf: bytes) -> int:
        if not self._stage_ready:
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS readings_stage "
                "(LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            self._stage_ready = True
        async with conn.cursor().copy(_COPY_STAGE) as cp:
            await cp.write(buf)
        cur = await conn.execute(_MERGE)
        return cur.rowcount

"""Reading rollup buckets for the linked-data views.

The rollup tables (``rollups_1m``, ``rollups_15m``, ``rollups_1h``, ``rollups_1d``,
``rollups_1d_local``; migration 0003) hold one mergeable state per (series, bucket): count, sum,
mean, m2, min, max (and first/last). The stream processor keeps them equal to a fresh
aggregation of the raw readings. A bucket's start is a UTC instant; its end is start + width,
or, for ``1d_local``, the next midnight in Europe/Brussels.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

LOCAL_TZ = ZoneInfo("Europe/Brussels")


@dataclass(frozen=True)
class Level:
    name: str
    table: str
    width: timedelta | None  # None: a calendar day in LOCAL_TZ


LEVELS = {
    level.name: level
    for level in (
        Level("1m", "rollups_1m", timedelta(minutes=1)),
        Level("15m", "rollups_15m", timedelta(minutes=15)),
        Level("1h", "rollups_1h", timedelta(hours=1)),
        Level("1d", "rollups_1d", timedelta(days=1)),
        Level("1d_local", "rollups_1d_local", None),
    )
}


def bucket_end(level: Level, start: datetime) -> datetime:
    if level.width is not None:
        return start + level.width
    local = start.astimezone(LOCAL_TZ)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), LOCAL_TZ)
    return midnight.astimezone(start.tzinfo)


async def available(conn: psycopg.AsyncConnection, level: Level) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (level.table,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def buckets(
    conn: psycopg.AsyncConnection,
    level: Level,
    series_id: int,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[dict[str, Any]]:
    """Buckets of one series with ``start <= bucket < end``, oldest first (count > 0 only:
    a zero count exists only inside a repair transaction)."""
    query = sql.SQL(
        "SELECT bucket AS start, count, sum, mean, m2, min, max FROM {} WHERE series_id = %(s)s"
        " AND bucket >= %(lo)s AND bucket < %(hi)s AND count > 0 ORDER BY bucket LIMIT %(n)s"
    ).format(sql.Identifier(level.table))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {"s": series_id, "lo": start, "hi": end, "n": limit})
        rows = await cur.fetchall()
    for r in rows:
        r["end"] = bucket_end(level, r["start"])
    return rows

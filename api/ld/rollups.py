"""Reading rollup buckets for the linked-data views.

The rollup tables (``rollups_1m``, ``rollups_15m``, ``rollups_1h``, ``rollups_1d``,
``rollups_1d_local``; migration 0003, levels in ``stream.rollups.LEVELS``) hold one mergeable
state per (series, bucket): count, sum, mean, m2, min, max (and first/last), which the stream
processor keeps equal to a fresh aggregation of the raw readings. A bucket's end is computed
with the rollups' own rule (``store.rollups.bucket_end_sql``): start + width, or, for
``1d_local``, the next midnight in Europe/Brussels.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from store.rollups import bucket_end_sql
from stream.rollups import LEVELS, Level

BY_NAME: dict[str, Level] = {level.name: level for level in LEVELS}


async def buckets(
    conn: psycopg.AsyncConnection,
    level: Level,
    series_id: int,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[dict[str, Any]]:
    """Buckets of one series with ``start <= bucket < end``, oldest first (count > 0 only:
    a zero count exists only inside a repair transaction, never committed)."""
    query = sql.SQL(
        "SELECT bucket AS start, {end} AS end, count, sum, mean, m2, min, max FROM {t}"
        " WHERE series_id = %(s)s AND bucket >= %(lo)s AND bucket < %(hi)s AND count > 0"
        " ORDER BY bucket LIMIT %(n)s"
    ).format(end=bucket_end_sql(level, sql.SQL("bucket")), t=sql.Identifier(level.table))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {"s": series_id, "lo": start, "hi": end, "n": limit})
        return await cur.fetchall()

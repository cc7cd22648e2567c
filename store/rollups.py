"""Rollup tables in the database: merging a batch's deltas, marking late buckets, the latest
values, and recomputing buckets from the raw readings (repair and rebuild).

The hot path (``apply``) runs inside the writer's transaction, after the raw insert, on the
deltas of exactly the rows that transaction inserted: one binary COPY into a temporary stage
table, then one multi-statement query that merges each level's deltas with the merge rules of
``0003_rollups.sql`` (``INSERT ... ON CONFLICT DO UPDATE``), queues late buckets in
``rollup_dirty`` and moves ``latest`` forward.

The repair (``repair_once``) recomputes queued buckets from ``readings``. It must never lose a
delta merged concurrently by a processor, so per level it first locks every bucket it will
write -- inserting the merge identity as a placeholder where no row exists yet, and resetting
existing rows to it (``INSERT ... ON CONFLICT DO UPDATE``, which waits for writers of those
rows) -- and only then, in a later statement and so a later snapshot, aggregates the raw
readings. A writer that merged into one of those buckets has committed before that snapshot
(its rows are counted); one that merges later waits for the lock and merges on top of the
recomputed state (its rows are not counted, being uncommitted at the snapshot). Placeholders
left without readings are deleted before the commit, so nobody ever sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from psycopg import sql

from store.copy import column_rows, write_rows
from stream.rollups import LEVELS, LOCAL_TZ, Deltas, Level

log = logging.getLogger(__name__)

STATE = (
    "count",
    "sum",
    "mean",
    "m2",
    "min",
    "max",
    "first_ts",
    "first_value",
    "last_ts",
    "last_value",
)
_STAGE_TYPES = (
    ("level", "int2"),
    ("late", "bool"),
    ("series_id", "int4"),
    ("bucket", "timestamptz"),
    ("count", "int8"),
    ("sum", "float8"),
    ("mean", "float8"),
    ("m2", "float8"),
    ("min", "float8"),
    ("max", "float8"),
    ("first_ts", "timestamptz"),
    ("first_value", "float8"),
    ("last_ts", "timestamptz"),
    ("last_value", "float8"),
)
_PG_DDL_TYPES = {"int2": "smallint", "bool": "boolean", "int4": "integer", "int8": "bigint"}
STAGE_DDL = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS rollup_stage ({}) ON COMMIT DELETE ROWS"
).format(
    sql.SQL(", ").join(
        sql.SQL("{} {} NOT NULL").format(
            sql.Identifier(name),
            sql.SQL(_PG_DDL_TYPES.get(t, "double precision" if t == "float8" else "timestamptz")),
        )
        for name, t in _STAGE_TYPES
    )
)
_COPY_STAGE = sql.SQL("COPY rollup_stage ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(sql.Identifier(n) for n, _ in _STAGE_TYPES)
)
_COLS = sql.SQL(", ").join(sql.Identifier(c) for c in ("series_id", "bucket", *STATE))
_DAY_LEVEL = 3  # latest is taken from the UTC-day deltas: one row per series and day


def _merge_level(level: Level) -> sql.Composed:
    """Merge the stage's on-time deltas of one level into its table (rules: 0003_rollups.sql)."""
    return sql.SQL(
        "INSERT INTO {t} AS r ({cols}) SELECT {cols} FROM rollup_stage "
        "WHERE level = {k} AND NOT late ORDER BY series_id, bucket "
        "ON CONFLICT (series_id, bucket) DO UPDATE SET "
        "count = r.count + EXCLUDED.count, "
        "sum = r.sum + EXCLUDED.sum, "
        "mean = r.mean + (EXCLUDED.mean - r.mean) * EXCLUDED.count / (r.count + EXCLUDED.count), "
        "m2 = r.m2 + EXCLUDED.m2 + (EXCLUDED.mean - r.mean) ^ 2 * r.count * EXCLUDED.count "
        "/ (r.count + EXCLUDED.count), "
        "min = least(r.min, EXCLUDED.min), "
        "max = greatest(r.max, EXCLUDED.max), "
        "first_ts = CASE WHEN EXCLUDED.first_ts < r.first_ts "
        "THEN EXCLUDED.first_ts ELSE r.first_ts END, "
        "first_value = CASE WHEN EXCLUDED.first_ts < r.first_ts "
        "THEN EXCLUDED.first_value ELSE r.first_value END, "
        "last_ts = CASE WHEN EXCLUDED.last_ts > r.last_ts "
        "THEN EXCLUDED.last_ts ELSE r.last_ts END, "
        "last_value = CASE WHEN EXCLUDED.last_ts > r.last_ts "
        "THEN EXCLUDED.last_value ELSE r.last_value END"
    ).format(t=sql.Identifier(level.table), cols=_COLS, k=sql.Literal(level.index))


_MARK_LATE = sql.SQL(
    "INSERT INTO rollup_dirty (level, series_id, bucket) "
    "SELECT level, series_id, bucket FROM rollup_stage WHERE late "
    "ORDER BY level, series_id, bucket"
)
_LATEST = sql.SQL(
    "INSERT INTO latest AS l (series_id, ts, value) "
    "SELECT DISTINCT ON (series_id) series_id, last_ts, last_value FROM rollup_stage "
    "WHERE level = {k} ORDER BY series_id, last_ts DESC "
    "ON CONFLICT (series_id) DO UPDATE SET ts = EXCLUDED.ts, value = EXCLUDED.value "
    "WHERE EXCLUDED.ts > l.ts"
).format(k=sql.Literal(_DAY_LEVEL))
# One round trip: a query without parameters may hold several statements.
APPLY_SQL = sql.SQL("; ").join([*(_merge_level(lv) for lv in LEVELS), _MARK_LATE, _LATEST])


def encode_stage(d: Deltas, late_before_us: int) -> tuple[np.ndarray, int]:
    """Binary COPY tuples of the stage rows and how many are late: a bucket's delta is late
    when it holds a reading older than ``late_before_us`` (its first_ts)."""
    blocks: list[dict[str, object]] = []
    late = 0
    for i, state in enumerate(d.levels):
        is_late = state["first_ts"] < late_before_us
        late += int(is_late.sum())
        blocks.append({**state, "level": i, "late": is_late})
    return column_rows(_STAGE_TYPES, blocks), late


async def apply(conn: psycopg.AsyncConnection, deltas: Deltas, late_before_us: int) -> int:
    """Merge ``deltas`` inside the caller's transaction; return the number of late buckets
    queued for repair. The temporary stage table must exist (``STAGE_DDL``, once per
    connection)."""
    if len(deltas) == 0:
        return 0
    rows, late = encode_stage(deltas, late_before_us)
    async with conn.cursor().copy(_COPY_STAGE) as cp:
        await write_rows(cp, rows)
    await conn.execute(APPLY_SQL)
    return late


# --- recomputing from the raw readings -----------------------------------------------------
_ORIGIN = sql.SQL("TIMESTAMPTZ '2000-01-01 00:00:00+00'")


def bucket_sql(level: Level, ts: sql.Composable) -> sql.Composed:
    """SQL of the bucket start of instant ``ts`` at ``level`` (the same as stream.rollups)."""
    if level.local:
        return sql.SQL("date_trunc('day', {}, {})").format(ts, sql.Literal(LOCAL_TZ))
    return sql.SQL("date_bin({}::interval, {}, {})").format(
        sql.Literal(f"{level.width_us // 1_000_000} seconds"), ts, _ORIGIN
    )


def bucket_end_sql(level: Level, bucket: sql.Composable) -> sql.Composed:
    if level.local:  # a local calendar day: 23, 24 or 25 hours
        return sql.SQL("(({b} AT TIME ZONE {tz}) + INTERVAL '1 day') AT TIME ZONE {tz}").format(
            b=bucket, tz=sql.Literal(LOCAL_TZ)
        )
    return sql.SQL("{} + {}::interval").format(
        bucket, sql.Literal(f"{level.width_us // 1_000_000} seconds")
    )


_REPAIR_KEYS_DDL = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS repair_keys "
    "(level smallint NOT NULL, series_id integer NOT NULL, bucket timestamptz NOT NULL) "
    "ON COMMIT DELETE ROWS"
)
_CLAIM = sql.SQL(
    "WITH claimed AS (DELETE FROM rollup_dirty WHERE id IN "
    "(SELECT id FROM rollup_dirty ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
    "RETURNING level, series_id, bucket) "
    "INSERT INTO repair_keys SELECT DISTINCT level, series_id, bucket FROM claimed"
)
_IDENTITY = sql.SQL(
    "0::bigint, 0::float8, 0::float8, 0::float8, 'Infinity'::float8, '-Infinity'::float8, "
    "'infinity'::timestamptz, 0::float8, '-infinity'::timestamptz, 0::float8"
)


def _lock_level(level: Level) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {t} AS r ({cols}) SELECT series_id, bucket, {identity} FROM repair_keys "
        "WHERE level = {k} ORDER BY series_id, bucket "
        "ON CONFLICT (series_id, bucket) DO UPDATE SET ({state}) = ({identity})"
    ).format(
        t=sql.Identifier(level.table),
        cols=_COLS,
        identity=_IDENTITY,
        k=sql.Literal(level.index),
        state=sql.SQL(", ").join(sql.Identifier(c) for c in STATE),
    )


def scratch_sql(level: Level, keys: sql.Composable) -> sql.Composed:
    """From-scratch aggregation of ``readings`` for the buckets in ``keys`` (a relation with
    series_id and bucket): one row per bucket that has readings, columns series_id, bucket and
    STATE. m2 is var_pop * count (PostgreSQL computes var_pop with Youngs-Cramer, stably)."""
    span = sql.SQL("x.series_id = k.series_id AND x.ts >= k.bucket AND x.ts < {}").format(
        bucket_end_sql(level, sql.SQL("k.bucket"))
    )
    return sql.SQL(
        "SELECT k.series_id, k.bucket, a.count, a.sum, a.mean, a.m2, a.min, a.max, "
        "f.ts AS first_ts, f.value AS first_value, l.ts AS last_ts, l.value AS last_value "
        "FROM {keys} k "
        "CROSS JOIN LATERAL (SELECT count(*) AS count, sum(x.value) AS sum, "
        "avg(x.value) AS mean, var_pop(x.value) * count(*) AS m2, min(x.value) AS min, "
        "max(x.value) AS max FROM readings x WHERE {span}) a "
        "CROSS JOIN LATERAL (SELECT x.ts, x.value FROM readings x WHERE {span} "
        "ORDER BY x.ts LIMIT 1) f "
        "CROSS JOIN LATERAL (SELECT x.ts, x.value FROM readings x WHERE {span} "
        "ORDER BY x.ts DESC LIMIT 1) l"
    ).format(keys=keys, span=span)


def _recompute_level(level: Level) -> sql.Composed:
    keys = sql.SQL("(SELECT series_id, bucket FROM repair_keys WHERE level = {})").format(
        sql.Literal(level.index)
    )
    return sql.SQL(
        "UPDATE {t} AS r SET ({state}) = ({values}) FROM ({scratch}) AS s "
        "WHERE r.series_id = s.series_id AND r.bucket = s.bucket"
    ).format(
        t=sql.Identifier(level.table),
        state=sql.SQL(", ").join(sql.Identifier(c) for c in STATE),
        values=sql.SQL(", ").join(sql.Identifier("s", c) for c in STATE),
        scratch=scratch_sql(level, keys),
    )


def _drop_empty(level: Level) -> sql.Composed:
    return sql.SQL(
        "DELETE FROM {t} AS r USING repair_keys k WHERE k.level = {k} "
        "AND r.series_id = k.series_id AND r.bucket = k.bucket AND r.count = 0"
    ).format(t=sql.Identifier(level.table), k=sql.Literal(level.index))


async def repair_once(conn: psycopg.AsyncConnection, limit: int = 5000) -> int:
    """Claim up to ``limit`` marks, recompute their buckets from the raw readings and commit;
    return the number of distinct buckets recomputed (0: nothing was queued)."""
    async with conn.transaction():
        await conn.execute(_REPAIR_KEYS_DDL)
        cur = await conn.execute(_CLAIM, (limit,))
        if cur.rowcount <= 0:
            return 0
        # Level by level, in the same order as the writer's merges and in key order within
        # a level, so a repair and a writer wait for each other but never deadlock.
        for level in LEVELS:
            await conn.execute(_lock_level(level))
            await conn.execute(_recompute_level(level))
            await conn.execute(_drop_empty(level))
        return cur.rowcount


def _mark_range_sql(level: Level, series: bool) -> sql.Composed:
    only = sql.SQL(" AND series_id = ANY(%(series)s)") if series else sql.SQL("")
    return sql.SQL(
        "INSERT INTO rollup_dirty (level, series_id, bucket) "
        "SELECT {k}, series_id, bucket FROM ("
        "SELECT series_id, {b} AS bucket FROM readings "
        "WHERE ts >= {since} AND ts < %(until)s{only} "
        "UNION SELECT series_id, bucket FROM {t} "
        "WHERE bucket >= {since} AND bucket < %(until)s{only}) AS u "
        "ORDER BY series_id, bucket"
    ).format(
        k=sql.Literal(level.index),
        b=bucket_sql(level, sql.SQL("ts")),
        since=bucket_sql(level, sql.SQL("%(since)s::timestamptz")),
        t=sql.Identifier(level.table),
        only=only,
    )


async def mark_range(
    conn: psycopg.AsyncConnection,
    since: datetime,
    until: datetime,
    series: Sequence[int] | None = None,
) -> int:
    """Queue every bucket that starts in [since, until) -- widened to whole buckets at each
    level -- and has readings or a rollup row, for ``series`` (None: all); commits."""
    params: dict[str, object] = {"since": since, "until": until, "series": list(series or [])}
    total = 0
    async with conn.transaction():
        for level in LEVELS:
            cur = await conn.execute(_mark_range_sql(level, series is not None), params)
            total += max(cur.rowcount, 0)
    return total


async def repair_all(conn: psycopg.AsyncConnection, limit: int = 5000) -> int:
    """Run repairs until nothing is queued; return the buckets recomputed."""
    total = 0
    while (n := await repair_once(conn, limit)) > 0:
        total += n
    return total


async def rebuild(
    conn: psycopg.AsyncConnection,
    since: datetime | None = None,
    until: datetime | None = None,
    series: Sequence[int] | None = None,
    progress: Callable[[datetime, datetime, int], None] | None = None,
) -> int:
    """Recompute every rollup bucket in [since, until) from the raw readings, one UTC day at a
    time (each day its own transactions), safely while processors write. Without bounds: the
    whole time range of the readings and rollups. ``since``/``until`` must be time-zone aware.
    Returns the buckets recomputed."""
    if since is None or until is None:
        lo, hi = await _time_range(conn, series)
        if lo is None or hi is None:
            return 0
        since = since or lo
        until = until or hi + timedelta(microseconds=1)
    since = since.astimezone(UTC)
    t = since.replace(hour=0, minute=0, second=0, microsecond=0)
    total = 0
    while t < until:
        end = min(t + timedelta(days=1), until)
        await mark_range(conn, max(t, since), end, series)
        total += await repair_all(conn)
        if progress is not None:
            progress(t, end, total)
        t = end
    return total


async def _time_range(
    conn: psycopg.AsyncConnection, series: Sequence[int] | None
) -> tuple[datetime | None, datetime | None]:
    only = sql.SQL(" WHERE series_id = ANY(%(series)s)") if series is not None else sql.SQL("")
    parts = [sql.SQL("SELECT min(ts) AS lo, max(ts) AS hi FROM readings{}").format(only)]
    parts += [
        sql.SQL("SELECT min(bucket), max(bucket) FROM {}{}").format(sql.Identifier(lv.table), only)
        for lv in LEVELS
    ]
    q = sql.SQL("SELECT min(lo), max(hi) FROM ({}) AS t").format(sql.SQL(" UNION ALL ").join(parts))
    cur = await conn.execute(q, {"series": list(series or [])})
    row = await cur.fetchone()
    await conn.commit()
    return (row[0], row[1]) if row else (None, None)

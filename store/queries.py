"""Read queries of the query API (asynchronous, on a pooled connection).

Raw readings of one sensor are ordered by ``(ts, metric)`` and paged by keyset: a page ends at a
position ``(ts, metric)`` and the next one starts strictly after it.

Plan. Each metric of a sensor is one series, and ``readings (series_id, ts)`` hands out one
series' readings in ts order. The query is a ``UNION ALL`` of one ``ORDER BY ts LIMIT n`` index
range scan per series, merged by PostgreSQL (Merge Append) and cut at ``n``: it reads about ``n``
rows in all, never sorts the time range, and stops early. (A LATERAL join with a per-series
LIMIT would read ``metrics x n`` rows: readings of one series lie one per heap page, so that is
~10x slower for 5 metrics at the maximum limit.)

Every branch of the union is planned over every chunk in its time range, so the range is
walked in windows of growing size (1, 8, 64, ... days): a page of dense data is found in the
first window, planned over one or two chunks; only a nearly empty range takes all the windows.

Metric names compare bytewise (``COLLATE "C"``), the same order as Python's ``str``, so the
order does not depend on the database's locale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

__all__ = [
    "Position",
    "RawPage",
    "RawReading",
    "Series",
    "UnknownMetric",
    "UnknownSensor",
    "merged_query",
    "raw_readings",
    "sensor_series",
]

FIRST_WINDOW = timedelta(days=1)
WINDOW_GROWTH = 8

_SERIES_OF_SENSOR = """
SELECT series_id, metric FROM series WHERE sensor_id = %(sensor)s ORDER BY metric COLLATE "C"
"""

# One branch per series. {lower} is ">=" or ">" (a constant, never user text); the values are
# all bound parameters.
_BRANCH = sql.SQL(
    "(SELECT {metric}::text AS metric, ts, value FROM readings"
    " WHERE series_id = {series_id} AND ts {lower} %(lo)s AND ts < %(hi)s"
    " ORDER BY ts LIMIT %(n)s)"
)
_MERGED = sql.SQL(
    'SELECT metric, ts, value FROM ({union}) u ORDER BY ts, metric COLLATE "C" LIMIT %(n)s'
)
_GE = sql.SQL(">=")
_GT = sql.SQL(">")


class UnknownSensor(LookupError):
    """No series exists for the sensor."""

    def __init__(self, sensor_id: str) -> None:
        super().__init__(f"unknown sensor {sensor_id!r}")
        self.sensor_id = sensor_id


class UnknownMetric(LookupError):
    """The sensor exists but has no series of this metric."""

    def __init__(self, sensor_id: str, metric: str, known: list[str]) -> None:
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        super().__init__(f"sensor {sensor_id!r} has no metric {metric!r} (its metrics: {shown})")
        self.sensor_id = sensor_id
        self.metric = metric
        self.known = known


@dataclass(frozen=True, slots=True)
class Series:
    series_id: int
    metric: str


@dataclass(frozen=True, slots=True)
class Position:
    """A place in the ``(ts, metric)`` order; a page continues strictly after it."""

    ts: datetime
    metric: str


@dataclass(frozen=True, slots=True)
class RawReading:
    """One reading; ``ts`` is in UTC."""

    metric: str
    ts: datetime
    value: float


@dataclass(frozen=True, slots=True)
class RawPage:
    readings: list[RawReading]
    # The position of the last reading when more readings follow it, else None.
    next_after: Position | None


async def sensor_series(conn: psycopg.AsyncConnection, sensor_id: str) -> list[Series]:
    """The series of a sensor, by metric in bytewise order; empty when the sensor is unknown."""
    cur = await conn.execute(_SERIES_OF_SENSOR, {"sensor": sensor_id})
    return [Series(series_id, metric) for series_id, metric in await cur.fetchall()]


async def raw_readings(
    conn: psycopg.AsyncConnection,
    sensor_id: str,
    *,
    start: datetime,
    end: datetime,
    limit: int,
    metric: str | None = None,
    after: Position | None = None,
) -> RawPage:
    """Readings of ``sensor_id`` (one ``metric`` or all) with ``start <= ts < end``, ordered by
    ``(ts, metric)``, at most ``limit``, strictly after ``after`` when given.

    Raises :class:`UnknownSensor` or :class:`UnknownMetric`.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    series = await sensor_series(conn, sensor_id)
    if not series:
        raise UnknownSensor(sensor_id)
    if metric is not None:
        known = [s.metric for s in series]
        series = [s for s in series if s.metric == metric]
        if not series:
            raise UnknownMetric(sensor_id, metric, known)

    want = limit + 1  # one more than asked: whether another page exists
    lo = start if after is None or after.ts < start else after.ts
    window = FIRST_WINDOW
    rows: list[tuple[str, datetime, float]] = []
    while lo < end and len(rows) < want:
        hi = end if end - lo <= window else lo + window
        rows += await _merged(conn, series, lo, hi, after, want - len(rows))
        # Windows are disjoint and ascending, so pages concatenate in order; only the first
        # one can hold readings at the cursor's own ts.
        after = None
        lo, window = hi, window * WINDOW_GROWTH

    # Datetimes come back in the session's TimeZone (the API's pool sets UTC).
    readings = [
        RawReading(m, ts.astimezone(UTC) if ts.utcoffset() else ts, value)
        for m, ts, value in rows[:limit]
    ]
    more = len(rows) > limit
    return RawPage(readings, Position(rows[limit - 1][1], rows[limit - 1][0]) if more else None)


async def _merged(
    conn: psycopg.AsyncConnection,
    series: list[Series],
    lo: datetime,
    hi: datetime,
    after: Position | None,
    n: int,
) -> list[tuple[str, datetime, float]]:
    query, params = merged_query(series, lo, hi, after, n)
    cur = await conn.execute(query, params)
    return await cur.fetchall()


def merged_query(
    series: list[Series], lo: datetime, hi: datetime, after: Position | None, n: int
) -> tuple[sql.Composed, dict[str, object]]:
    """The query for the first ``n`` readings of ``series`` in ``[lo, hi)`` by (ts, metric),
    strictly after ``after`` (whose ts is ``lo`` when it matters), and its parameters."""
    params: dict[str, object] = {"lo": lo, "hi": hi, "n": n}
    branches = []
    for i, s in enumerate(series):
        # (ts, metric) > (lo, after.metric) for a fixed metric: ts >= lo when the metric comes
        # after the cursor's, else ts > lo.
        strict = after is not None and after.ts == lo and s.metric <= after.metric
        branches.append(
            _BRANCH.format(
                metric=sql.Placeholder(f"m{i}"),
                series_id=sql.Placeholder(f"s{i}"),
                lower=_GT if strict else _GE,
            )
        )
        params[f"m{i}"] = s.metric
        params[f"s{i}"] = s.series_id
    return _MERGED.format(union=sql.SQL(" UNION ALL ").join(branches)), params

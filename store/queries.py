"""Read queries of the query API (asynchronous, one pooled connection per call).

Raw readings of one sensor are ordered by ``(ts, metric)`` and paged by keyset: a page ends at a
position ``(ts, metric)`` and the next one starts strictly after it. The plan is one index range
scan on ``readings (series_id, ts)`` per metric of the sensor, each stopping after ``limit + 1``
rows, merged and cut to ``limit + 1``: the work is bounded by ``metrics x limit`` however many
rows the time range holds, and the extra row tells whether another page exists.

Metric names compare bytewise (``COLLATE "C"``), the same order as Python's ``str``, so the
order does not depend on the database's locale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

__all__ = [
    "Position",
    "RawPage",
    "RawReading",
    "UnknownMetric",
    "UnknownSensor",
    "raw_readings",
    "sensor_metrics",
]

# The per-metric subquery repeats the outer limit: each metric contributes at most limit + 1
# rows, so the final sort handles (metrics x (limit + 1)) rows at most.
# The lower bound of the index scan is max(from, cursor ts), computed by the caller; the keyset
# condition then only has to drop the rows at exactly the cursor's ts whose metric is not
# after the cursor's metric: (ts, metric) > (c_ts, c_metric) given ts >= c_ts.
_RAW_ALL_METRICS = """
SELECT s.metric, r.ts, r.value
FROM series s
CROSS JOIN LATERAL (
    SELECT r.ts, r.value
    FROM readings r
    WHERE r.series_id = s.series_id
      AND r.ts >= %(lo)s AND r.ts < %(hi)s
      AND (r.ts > %(after_ts)s OR s.metric > %(after_metric)s COLLATE "C")
    ORDER BY r.ts
    LIMIT %(n)s
) r
WHERE s.sensor_id = %(sensor)s
ORDER BY r.ts, s.metric COLLATE "C"
LIMIT %(n)s
"""

# A separate text (not "metric = %s OR %s IS NULL") so a prepared generic plan still looks the
# series up by its unique (sensor_id, metric) key.
_RAW_ONE_METRIC = """
SELECT s.metric, r.ts, r.value
FROM series s
CROSS JOIN LATERAL (
    SELECT r.ts, r.value
    FROM readings r
    WHERE r.series_id = s.series_id
      AND r.ts >= %(lo)s AND r.ts < %(hi)s
      AND (r.ts > %(after_ts)s OR s.metric > %(after_metric)s COLLATE "C")
    ORDER BY r.ts
    LIMIT %(n)s
) r
WHERE s.sensor_id = %(sensor)s AND s.metric = %(metric)s
ORDER BY r.ts, s.metric COLLATE "C"
LIMIT %(n)s
"""

_METRICS_OF_SENSOR = """
SELECT metric FROM series WHERE sensor_id = %(sensor)s ORDER BY metric COLLATE "C"
"""


class UnknownSensor(LookupError):
    """No series exists for the sensor."""

    def __init__(self, sensor_id: str) -> None:
        super().__init__(f"unknown sensor {sensor_id!r}: no readings were ever stored for it")
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
class Position:
    """A place in the ``(ts, metric)`` order; a page continues strictly after it."""

    ts: datetime
    metric: str


@dataclass(frozen=True, slots=True)
class RawReading:
    metric: str
    ts: datetime
    value: float


@dataclass(frozen=True, slots=True)
class RawPage:
    readings: list[RawReading]
    # The position of the last reading when more readings follow it, else None.
    next_after: Position | None


async def sensor_metrics(conn: psycopg.AsyncConnection, sensor_id: str) -> list[str]:
    """The metrics of a sensor in bytewise order; empty when the sensor is unknown."""
    cur = await conn.execute(_METRICS_OF_SENSOR, {"sensor": sensor_id})
    return [row[0] for row in await cur.fetchall()]


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

    Raises :class:`UnknownSensor` / :class:`UnknownMetric` when the page is empty because the
    sensor or metric does not exist (checked only then: a page with rows proves both exist).
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if after is None:
        # Every metric is > '' (metrics are never empty), so this keeps every ts >= start.
        after = Position(start, "")
    params = {
        "sensor": sensor_id,
        "metric": metric,
        "lo": max(start, after.ts),
        "hi": end,
        "after_ts": after.ts,
        "after_metric": after.metric,
        "n": limit + 1,
    }
    query = _RAW_ALL_METRICS if metric is None else _RAW_ONE_METRIC
    cur = await conn.execute(query, params)
    rows = await cur.fetchall()
    if not rows:
        known = await sensor_metrics(conn, sensor_id)
        if not known:
            raise UnknownSensor(sensor_id)
        if metric is not None and metric not in known:
            raise UnknownMetric(sensor_id, metric, known)
        return RawPage([], None)
    readings = [RawReading(m, ts, value) for m, ts, value in rows[:limit]]
    more = len(rows) > limit
    last = readings[-1]
    return RawPage(readings, Position(last.ts, last.metric) if more else None)

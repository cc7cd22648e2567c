"""store/queries.py on the real database: order, keyset paging, time windows and the plan."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from store import queries
from store.queries import Position, RawPage, Series

pytestmark = pytest.mark.integration

T = TypeVar("T")
T0 = datetime(2026, 3, 1, tzinfo=UTC)
YEAR = timedelta(days=366)


@pytest.fixture
def run(migrated_db: str, db: psycopg.Connection) -> Iterator[Callable[..., Any]]:
    """Run ``fn(conn, ...)`` on an async connection of the (emptied) test database."""

    def _run(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        async def go() -> T:
            async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as c:
                return await fn(c, *args, **kwargs)

        return asyncio.run(go())

    yield _run


def insert(db: psycopg.Connection, sensor: str, metric: str, stamps: list[datetime]) -> int:
    row = db.execute(
        "INSERT INTO series (sensor_id, metric) VALUES (%s, %s) RETURNING series_id",
        (sensor, metric),
    ).fetchone()
    assert row is not None
    with db.cursor().copy("COPY readings (series_id, ts, value) FROM STDIN") as cp:
        for i, ts in enumerate(stamps):
            cp.write_row((row[0], ts, float(i)))
    return int(row[0])


def spread(db: psycopg.Connection) -> list[tuple[str, datetime]]:
    """Three metrics over most of a year, dense and sparse, some sharing instants, so pages
    cross the query's time windows (1, 8, 64, ... days). Returns every (metric, ts) in order."""
    days = [0, 0.25, 0.5, 1, 1.0001, 3, 9, 9.5, 40, 73, 100, 200, 300, 365.9]
    shared = [T0 + timedelta(days=d) for d in days]
    insert(db, "s1", "pm25", shared)
    insert(db, "s1", "pm10", [*shared[::2], T0 + timedelta(days=2)])
    insert(db, "s1", "temp", [T0 + timedelta(days=d, seconds=1) for d in days[::3]] + shared[1:3])
    insert(db, "s2", "pm25", shared)  # another sensor
    rows = db.execute(
        "SELECT s.metric, r.ts FROM readings r JOIN series s USING (series_id)"
        " WHERE s.sensor_id = 's1' ORDER BY r.ts, s.metric COLLATE \"C\""
    ).fetchall()
    return [(m, ts) for m, ts in rows]


def walk(run: Callable[..., Any], limit: int, **kwargs: Any) -> list[tuple[str, datetime]]:
    seen: list[tuple[str, datetime]] = []
    after = None
    for _ in range(1000):
        page: RawPage = run(
            queries.raw_readings, "s1", start=T0, end=T0 + YEAR, limit=limit, after=after, **kwargs
        )
        seen += [(r.metric, r.ts) for r in page.readings]
        if page.next_after is None:
            return seen
        after = page.next_after
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 1000])
def test_keyset_pages_return_every_reading_once_in_order_across_time_windows(
    db: psycopg.Connection, run: Callable[..., Any], limit: int
) -> None:
    expected = spread(db)
    assert walk(run, limit) == expected


def test_one_metric_pages_return_only_that_metric(
    db: psycopg.Connection, run: Callable[..., Any]
) -> None:
    expected = [r for r in spread(db) if r[0] == "temp"]
    assert walk(run, 2, metric="temp") == expected


def test_cursor_at_a_shared_instant_continues_with_the_next_metric(
    db: psycopg.Connection, run: Callable[..., Any]
) -> None:
    expected = spread(db)
    at = T0 + timedelta(days=0.25)  # pm25 and temp both have this instant
    i = expected.index(("pm25", at))
    assert expected[i + 1] == ("temp", at)
    page = run(
        queries.raw_readings, "s1", start=T0, end=T0 + YEAR, limit=2, after=Position(at, "pm25")
    )
    assert [(r.metric, r.ts) for r in page.readings] == expected[i + 1 : i + 3]


def test_bounds_are_half_open(db: psycopg.Connection, run: Callable[..., Any]) -> None:
    insert(db, "s1", "pm25", [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)])
    page = run(
        queries.raw_readings,
        "s1",
        start=T0 + timedelta(hours=1),
        end=T0 + timedelta(hours=2),
        limit=10,
    )
    assert [r.ts for r in page.readings] == [T0 + timedelta(hours=1)]
    assert page.next_after is None


def test_last_full_page_has_no_next_position(
    db: psycopg.Connection, run: Callable[..., Any]
) -> None:
    insert(db, "s1", "pm25", [T0, T0 + timedelta(hours=1)])
    page = run(queries.raw_readings, "s1", start=T0, end=T0 + YEAR, limit=2)
    assert len(page.readings) == 2
    assert page.next_after is None


def test_timestamps_are_utc_whatever_the_session_time_zone(
    db: psycopg.Connection, run: Callable[..., Any]
) -> None:
    insert(db, "s1", "pm25", [T0])

    async def in_brussels(conn: psycopg.AsyncConnection) -> RawPage:
        await conn.execute("SET TimeZone = 'Europe/Brussels'")
        return await queries.raw_readings(conn, "s1", start=T0, end=T0 + YEAR, limit=1)

    (reading,) = run(in_brussels).readings
    assert reading.ts == T0
    assert reading.ts.utcoffset() == timedelta(0)


def test_unknown_sensor_and_unknown_metric_raise(
    db: psycopg.Connection, run: Callable[..., Any]
) -> None:
    spread(db)
    with pytest.raises(queries.UnknownSensor, match="unknown sensor 'nope'"):
        run(queries.raw_readings, "nope", start=T0, end=T0 + YEAR, limit=1)
    with pytest.raises(queries.UnknownMetric) as err:
        run(queries.raw_readings, "s1", start=T0, end=T0 + YEAR, limit=1, metric="no2")
    assert err.value.known == ["pm10", "pm25", "temp"]


def test_plan_merges_index_scans_and_reads_about_limit_rows(
    db: psycopg.Connection, run: Callable[..., Any]
) -> None:
    """Each metric is read through the (series_id, ts) index in ts order and the branches are
    merged: about `limit` rows are read in all, not `metrics x limit`, and nothing sorts the
    time range."""
    stamps = [T0 + timedelta(minutes=i) for i in range(3 * 1440)]
    ids = [insert(db, "s1", m, stamps) for m in ("no2", "pm10", "pm25", "temp")]
    db.execute("ANALYZE readings")
    db.execute("ANALYZE series")
    series = [Series(i, m) for i, m in zip(ids, ("no2", "pm10", "pm25", "temp"), strict=True)]
    limit = 100
    query, params = queries.merged_query(series, T0, T0 + timedelta(days=3), None, limit + 1)

    async def explain(conn: psycopg.AsyncConnection) -> Any:
        cur = await conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + query, params)
        row = await cur.fetchone()
        assert row is not None
        return row[0]

    plan = run(explain)
    plan = plan if isinstance(plan, list) else json.loads(plan)
    nodes = list(_nodes(plan[0]["Plan"]))
    assert any(n["Node Type"] == "Merge Append" for n in nodes), nodes
    scans = [n for n in nodes if n.get("Relation Name", "").startswith("_hyper")]
    assert scans and all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in scans)
    read = sum(n["Actual Rows"] * n["Actual Loops"] for n in scans)
    # Merge Append primes one row per branch and the final (ts, metric) sort completes the
    # last instant's group: a few rows per metric over limit + 1, far from metrics x limit.
    assert read <= limit + 1 + 2 * len(series), f"read {read} rows for a page of {limit}"


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)

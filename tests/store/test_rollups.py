"""The writer's rollups and latest values on the real database: exactly the inserted rows,
late buckets repaired from raw, concurrent repair and writer, rebuild."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import psycopg
import pytest

from store import rollups
from store.readings import ReadingsWriter, WriteResult
from stream.rollups import HOUR_US, LEVELS, MINUTE_US, deltas, sort_unique
from tests.support import assert_rollups_match_raw, pending_repairs, rollup_mismatches

pytestmark = pytest.mark.integration

NOW_US = int(datetime(2026, 11, 29, 19, 0, tzinfo=UTC).timestamp()) * 1_000_000
SENSORS = [f"roll-{i}" for i in range(3)]
METRICS = ["pm25", "no2"]


def batch(rng: np.random.Generator, n: int, span_us: int, end_us: int = NOW_US) -> pl.DataFrame:
    """``n`` readings of random series at random instants in [end - span, end)."""
    return pl.DataFrame(
        {
            "sensor": rng.choice(SENSORS, n),
            "metric": rng.choice(METRICS, n),
            # whole seconds: duplicates of a key happen
            "ts_us": end_us - rng.integers(1, span_us // 1_000_000, n) * 1_000_000,
            "value": np.round(rng.normal(20, 8, n), 2),
        }
    )


def run_async(
    db: psycopg.Connection, fn: Callable[[psycopg.AsyncConnection], Awaitable[Any]]
) -> Any:
    async def _go() -> Any:
        async with await psycopg.AsyncConnection.connect(db.info.dsn) as conn:
            return await fn(conn)

    return asyncio.run(_go())


def write(
    db: psycopg.Connection, writer: ReadingsWriter, *frames: pl.DataFrame
) -> list[WriteResult]:
    async def _go(conn: psycopg.AsyncConnection) -> list[WriteResult]:
        return [await writer.write(conn, f, NOW_US) for f in frames]

    return run_async(db, _go)


def snapshot(db: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
        for t in [*(lv.table for lv in LEVELS), "latest"]
    }


def test_a_batch_makes_every_rollup_and_latest_equal_the_raw_aggregation(
    db: psycopg.Connection,
) -> None:
    rng = np.random.default_rng(1)
    [res] = write(db, ReadingsWriter(), batch(rng, 3000, 6 * 3600 * 1_000_000))
    assert res.path == "copy" and res.inserted == res.rows
    assert_rollups_match_raw(db)
    assert db.execute("SELECT count(*) FROM rollups_1d").fetchone() == (6,)


def test_a_replayed_batch_adds_nothing_to_the_rollups(db: psycopg.Connection) -> None:
    rng = np.random.default_rng(2)
    b = batch(rng, 2000, 3600 * 1_000_000)
    writer = ReadingsWriter()
    write(db, writer, b)
    before = snapshot(db)
    [again] = write(db, writer, b)
    assert (again.path, again.inserted) == ("merge", 0)
    assert snapshot(db) == before
    assert_rollups_match_raw(db)


def test_a_partly_new_batch_adds_exactly_its_new_readings(db: psycopg.Connection) -> None:
    rng = np.random.default_rng(3)
    old = batch(rng, 1500, 3600 * 1_000_000)
    new = batch(rng, 1500, 3600 * 1_000_000)
    writer = ReadingsWriter()
    write(db, writer, old)
    stored = db.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
    [res] = write(db, writer, pl.concat([old.sample(700, seed=1), new]))
    assert res.path == "merge"
    after = db.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
    assert res.inserted == after - stored > 0
    assert_rollups_match_raw(db)


def test_duplicate_and_out_of_order_readings_in_one_batch_count_once_first_value_wins(
    db: psycopg.Connection,
) -> None:
    t = NOW_US - 600_000_000
    b = pl.DataFrame(
        {
            "sensor": ["roll-0"] * 6,
            "metric": ["pm25"] * 6,
            "ts_us": [t + 3, t + 1, t + 3, t + 2, t + 1, t - 7 * MINUTE_US],
            "value": [1.0, 2.0, 9.0, 3.0, 8.0, 4.0],
        }
    )
    [res] = write(db, ReadingsWriter(), b)
    assert (res.rows, res.inserted) == (4, 4)
    rows = db.execute("SELECT value FROM readings ORDER BY ts").fetchall()
    assert [r[0] for r in rows] == [4.0, 2.0, 3.0, 1.0]
    assert_rollups_match_raw(db)
    assert db.execute("SELECT count, first_value, last_value FROM rollups_1h").fetchall() in (
        [(4, 4.0, 1.0)],
        [(1, 4.0, 4.0), (3, 2.0, 1.0)],  # when t - 7 min falls in the previous hour
    )


def test_late_readings_queue_their_buckets_and_the_repair_makes_them_exact(
    db: psycopg.Connection,
) -> None:
    rng = np.random.default_rng(4)
    writer = ReadingsWriter(late_horizon_s=3600)
    hot = batch(rng, 800, 3000 * 1_000_000)  # within the last 50 minutes
    late = batch(rng, 800, 3 * 86400 * 1_000_000, end_us=NOW_US - 2 * 3600 * 1_000_000)
    [r1, r2] = write(db, writer, hot, pl.concat([late, hot.head(100)]))
    assert r1.late_buckets == 0 and r2.late_buckets > 0
    assert pending_repairs(db) > 0
    assert rollup_mismatches(db), "late buckets are not merged on the hot path"
    repaired = run_async(db, rollups.repair_all)
    assert repaired > 0 and pending_repairs(db) == 0
    assert_rollups_match_raw(db)
    # A replay of the late batch after the repair adds and queues nothing.
    [r3] = write(db, writer, late)
    assert (r3.inserted, r3.late_buckets) == (0, 0)
    assert_rollups_match_raw(db)


def test_latest_only_moves_forward(db: psycopg.Connection) -> None:
    writer = ReadingsWriter()
    one = {"sensor": ["roll-0"], "metric": ["pm25"]}
    write(db, writer, pl.DataFrame({**one, "ts_us": [NOW_US - 10], "value": [5.0]}))
    write(db, writer, pl.DataFrame({**one, "ts_us": [NOW_US - 20_000_000], "value": [6.0]}))
    assert db.execute("SELECT value FROM latest").fetchall() == [(5.0,)]
    write(db, writer, pl.DataFrame({**one, "ts_us": [NOW_US], "value": [7.0]}))
    assert db.execute("SELECT value FROM latest").fetchall() == [(7.0,)]
    assert_rollups_match_raw(db)


async def _open_merge(conn: psycopg.AsyncConnection, writer: ReadingsWriter, ts: int) -> None:
    """A writer's transaction up to its rollup merge, left open (uncommitted)."""
    b = pl.DataFrame({"sensor": ["roll-0"], "metric": ["pm25"], "ts_us": [ts], "value": [100.0]})
    ids = await writer.series.attach(conn, b)
    rows = sort_unique(ids["series_id"].to_numpy(), b["ts_us"].to_numpy(), b["value"].to_numpy())
    await conn.execute(rollups.STAGE_DDL)
    await conn.execute(
        "INSERT INTO readings VALUES (%s, to_timestamp(%s / 1e6), %s)",
        (int(rows.series_id[0]), ts, 100.0),
    )
    await rollups.apply(conn, deltas(rows), late_before_us=0)


def _seed_bucket(db: psycopg.Connection, writer: ReadingsWriter) -> int:
    """A bucket with committed readings, queued for repair: (series id of roll-0/pm25)."""
    write(
        db,
        writer,
        pl.DataFrame(
            {
                "sensor": ["roll-0"] * 3,
                "metric": ["pm25"] * 3,
                "ts_us": [NOW_US - 30 * MINUTE_US - i * 1_000_000 for i in range(3)],
                "value": [1.0, 2.0, 3.0],
            }
        ),
    )
    run_async(db, lambda c: rollups.mark_range(c, _dt(NOW_US - HOUR_US), _dt(NOW_US)))
    return int(db.execute("SELECT series_id FROM series").fetchone()[0])  # type: ignore[index]


def _dt(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, UTC)


def test_a_repair_waits_for_a_writer_holding_its_bucket_and_counts_its_rows(
    db: psycopg.Connection,
) -> None:
    writer = ReadingsWriter()
    _seed_bucket(db, writer)

    async def scenario() -> None:
        async with (
            await psycopg.AsyncConnection.connect(db.info.dsn) as w,
            await psycopg.AsyncConnection.connect(db.info.dsn) as r,
        ):
            await _open_merge(w, writer, NOW_US - 30 * MINUTE_US + 5_000_000)
            repair = asyncio.create_task(rollups.repair_all(r))
            await asyncio.sleep(0.5)
            assert not repair.done(), "the repair must wait for the writer's lock"
            await w.commit()
            await asyncio.wait_for(repair, 10)

    asyncio.run(scenario())
    assert pending_repairs(db) == 0
    assert_rollups_match_raw(db)


def test_a_writer_waits_for_a_repair_holding_its_bucket_and_merges_on_top(
    db: psycopg.Connection,
) -> None:
    writer = ReadingsWriter()
    _seed_bucket(db, writer)

    async def scenario() -> None:
        async with (
            await psycopg.AsyncConnection.connect(db.info.dsn) as w,
            await psycopg.AsyncConnection.connect(db.info.dsn) as r,
        ):
            # The repair, step by step: claim, lock (placeholders or reset rows).
            await r.execute(rollups._REPAIR_KEYS_DDL)
            await r.execute(rollups._CLAIM, (5000,))
            for level in LEVELS:
                await r.execute(rollups._lock_level(level))
            merging = asyncio.create_task(_open_merge(w, writer, NOW_US - 29 * MINUTE_US))
            await asyncio.sleep(0.5)
            assert not merging.done(), "the writer must wait for the repair's lock"
            for level in LEVELS:
                await r.execute(rollups._recompute_level(level))
                await r.execute(rollups._drop_empty(level))
            await r.commit()
            await asyncio.wait_for(merging, 10)
            await w.commit()

    asyncio.run(scenario())
    assert_rollups_match_raw(db)
    assert db.execute("SELECT count FROM rollups_1h").fetchall() == [(4,)]


def test_rebuild_restores_corrupted_missing_and_orphan_rollup_rows(db: psycopg.Connection) -> None:
    rng = np.random.default_rng(5)
    write(db, ReadingsWriter(), batch(rng, 2000, 2 * 86400 * 1_000_000))
    db.execute("UPDATE rollups_1h SET count = count + 1, max = 1e9")
    db.execute("DELETE FROM rollups_1m WHERE bucket < (SELECT max(bucket) FROM rollups_1m)")
    db.execute(
        "INSERT INTO rollups_15m SELECT series_id, bucket - INTERVAL '30 days', count, sum, "
        "mean, m2, min, max, first_ts, first_value, last_ts, last_value FROM rollups_15m LIMIT 1"
    )
    assert len(rollup_mismatches(db)) >= 3
    days: list[datetime] = []
    n = run_async(
        db,
        lambda c: rollups.rebuild(
            c, since=None, until=None, progress=lambda t, _e, _n: days.append(t)
        ),
    )
    assert n > 0 and len(days) >= 3
    assert_rollups_match_raw(db)


def test_rebuild_of_some_series_and_a_range_leaves_the_rest_alone(db: psycopg.Connection) -> None:
    rng = np.random.default_rng(6)
    write(db, ReadingsWriter(), batch(rng, 1000, 86400 * 1_000_000))
    db.execute("UPDATE rollups_1d SET count = 0 + 999")
    one = db.execute("SELECT min(series_id) FROM series").fetchone()[0]  # type: ignore[index]
    since, until = _dt(NOW_US - 86400 * 1_000_000), _dt(NOW_US) + timedelta(days=1)
    run_async(db, lambda c: rollups.rebuild(c, since, until, series=[one]))
    counts = dict(db.execute("SELECT series_id, count FROM rollups_1d").fetchall())
    assert counts[one] != 999
    assert any(v == 999 for k, v in counts.items() if k != one)

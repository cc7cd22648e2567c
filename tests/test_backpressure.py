"""Backpressure: with the database away or slow, the processor stops consuming (bounded memory),
retries, commits nothing it has not written, stays in its group, and catches up afterwards.

The database is taken away through a TCP proxy in front of the shared PostgreSQL server
(`tests/support.TcpProxy`), never by stopping the server other tests use."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psycopg
import pytest

from meetnet import procs
from meetnet.settings import Settings
from tests.conftest import TEST_DB
from tests.support import (
    TcpProxy,
    assert_rollups_match_raw,
    count_readings,
    kafka_offsets,
    produce,
    readings_record,
    register_sensors,
    rss_mb,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.integration

METRICS = ("pm25", "no2", "temperature")
PER_RECORD = 60  # readings per record: 20 instants x 3 metrics


def records(sensors: int, first: int, count: int, t0_ms: int) -> list[tuple[str, bytes]]:
    """``count`` records per sensor, each of 20 consecutive seconds of all metrics."""
    out = []
    for k in range(first, first + count):
        for i in range(sensors):
            sid = f"bp-{i:03d}"
            readings = [
                {"metric": m, "ts": t0_ms + (k * 20 + j) * 1000, "value": round(i + k + j * 0.1, 3)}
                for j in range(20)
                for m in METRICS
            ]
            out.append((sid, readings_record(sid, readings, rx=t0_ms)))
    return out


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    target = urlsplit(TEST_DB)
    p = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    try:
        yield p
    finally:
        p.close()


def caught_up(s: Settings) -> bool:
    ends, committed = kafka_offsets(s)
    return all(committed[p] >= ends[p] for p in ends)


def _log(tmp_path: Path) -> str:
    return (tmp_path / "processor.log").read_text()


def test_database_away_stops_consumption_commits_nothing_and_loses_nothing(
    stack: Settings, db: psycopg.Connection, tmp_path: Path, proxy: TcpProxy
) -> None:
    env = {
        "MEETNET_DATABASE_URL": proxy.url(TEST_DB),
        "MEETNET_PROCESSOR_FETCH_MAX_BYTES": str(1024 * 1024),
        "MEETNET_PROCESSOR_MAX_RECORDS": "200",
    }
    t0 = (int(time.time()) - 3600) * 1000
    sensors = 50
    register_sensors(db, [f"bp-{i:03d}" for i in range(sensors)], metrics=METRICS)
    proc = start_worker("processor", stack, tmp_path, env)
    try:
        produce(stack, records(sensors, 0, 2, t0))
        wait_until(lambda: count_readings(db) == sensors * 2 * PER_RECORD, 60, "warm-up stored")
        base = rss_mb(proc.pid)

        proxy.cut()
        produce(stack, records(sensors, 2, 1, t0))  # makes the sink try, fail and retry
        wait_until(lambda: "database write failed" in _log(tmp_path), 30, "a failed write")
        ends0, committed0 = kafka_offsets(stack)
        # About 29 MB of records (~100 per batch of 1 MiB) while the database is away.
        backlog = records(sensors, 3, 100, t0)
        produce(stack, backlog)
        peak, samples = base, 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            peak = max(peak, rss_mb(proc.pid))
            ends, committed = kafka_offsets(stack)
            assert committed == committed0, "offsets were committed while the database was away"
            samples += 1
            time.sleep(0.25)
        assert proc.poll() is None, "the processor died while the database was away"
        assert sum(ends.values()) > sum(ends0.values()), "the backlog reached Kafka"
        assert proxy.refused > 0, "the processor should keep retrying to connect"
        # Consumed, 29 MB of records would take far more than this; paused, a few batches.
        print(f"RSS {base:.0f} MB before, {peak:.0f} MB at most while the database was away")
        assert peak - base < 40, f"processor RSS grew {peak - base:.0f} MB while paused"

        proxy.restore()
        total = sensors * 103 * PER_RECORD
        wait_until(lambda: count_readings(db) == total, 120, f"{total} readings stored")
        wait_until(lambda: caught_up(stack), 30, "offsets committed up to the end")
    finally:
        procs.stop(proc)
    log = _log(tmp_path)
    assert "pausing consumption" in log and "resuming consumption" in log
    assert "partitions revoked" not in log
    distinct = db.execute("SELECT count(DISTINCT (series_id, ts)) FROM readings").fetchone()
    assert distinct == (total,)
    assert_rollups_match_raw(db)


def test_a_sink_stuck_longer_than_max_poll_interval_keeps_the_group_and_catches_up(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    env = {
        "MEETNET_PROCESSOR_MAX_POLL_INTERVAL_MS": "3000",
        "MEETNET_PROCESSOR_MAX_RECORDS": "100",
    }
    t0 = (int(time.time()) - 3600) * 1000
    sensors = 30
    register_sensors(db, [f"bp-{i:03d}" for i in range(sensors)], metrics=METRICS)
    proc = start_worker("processor", stack, tmp_path, env)
    try:
        produce(stack, records(sensors, 0, 1, t0))
        wait_until(lambda: count_readings(db) == sensors * PER_RECORD, 60, "warm-up stored")
        # "Slow": another session holds a lock that makes every insert wait, for 3x the
        # max poll interval, while records keep arriving.
        locked, release = threading.Event(), threading.Event()

        def hold_lock() -> None:
            with psycopg.connect(TEST_DB) as c:
                c.execute("LOCK TABLE readings IN EXCLUSIVE MODE")
                locked.set()
                release.wait(30)

        holder = threading.Thread(target=hold_lock, daemon=True)
        holder.start()
        assert locked.wait(10)
        _, committed0 = kafka_offsets(stack)
        stuck_from = time.monotonic()
        for k in range(1, 10):
            produce(stack, records(sensors, k, 1, t0))
            time.sleep(0.9)
        assert kafka_offsets(stack)[1] == committed0, "committed while the write was blocked"
        assert proc.poll() is None
        release.set()
        holder.join(10)
        stuck = time.monotonic() - stuck_from
        assert stuck > 3 * 3.0 * 0.9
        total = sensors * 10 * PER_RECORD
        wait_until(lambda: count_readings(db) == total, 60, f"{total} readings stored")
        wait_until(lambda: caught_up(stack), 30, "offsets committed up to the end")
    finally:
        procs.stop(proc)
    log = _log(tmp_path)
    assert "pausing consumption" in log
    # Paused but polling: the group never took the consumer for dead.
    assert log.count("partitions assigned") == 1 and "partitions revoked" not in log
    assert db.execute("SELECT count(DISTINCT (series_id, ts)) FROM readings").fetchone() == (total,)
    assert_rollups_match_raw(db)


def test_slow_database_connection_still_stores_everything_once(
    stack: Settings, db: psycopg.Connection, tmp_path: Path, proxy: TcpProxy
) -> None:
    """Every chunk to and from the database delayed: slower, same result."""
    proxy.delay_s = 0.02
    env = {"MEETNET_DATABASE_URL": proxy.url(TEST_DB), "MEETNET_PROCESSOR_MAX_RECORDS": "50"}
    t0 = (int(time.time()) - 3600) * 1000
    register_sensors(db, [f"bp-{i:03d}" for i in range(20)], metrics=METRICS)
    proc = start_worker("processor", stack, tmp_path, env)
    try:
        batch = records(20, 0, 10, t0)
        rng = np.random.default_rng(0)
        produce(stack, [batch[i] for i in rng.permutation(len(batch))])
        total = 20 * 10 * PER_RECORD
        wait_until(lambda: count_readings(db) == total, 90, f"{total} readings stored")
    finally:
        procs.stop(proc)
    assert_rollups_match_raw(db)

"""Bad input on the processor: duplicate and non-monotonic timestamps, NaN and infinite values,
a burst of a million readings for one sensor, clock jumps of a device and of the processor.
Each is handled without a crash or unbounded memory, and the rollups stay exact."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest

from meetnet import procs
from meetnet.settings import Settings
from meetnet.wire import MAX_RECORD_BYTES, Reason, _split
from stream.processor import Processor
from tests.support import (
    assert_rollups_match_raw,
    count_readings,
    pending_repairs,
    produce,
    read_deadletters,
    readings_record,
    register_sensors,
    rss_mb,
    start_worker,
    stored_keys,
    wait_until,
)

pytestmark = pytest.mark.integration


def _now_ms() -> int:
    return int(time.time()) * 1000


def test_duplicate_and_non_monotonic_timestamps_keep_the_first_value_once(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    t = _now_ms() - 600_000
    ts = [t + 3000, t + 1000, t + 3000, t + 2000, t + 1000, t - 90_000, t + 2000]
    vals = [1.0, 2.0, 9.0, 3.0, 8.0, 4.0, 7.0]
    first = [{"metric": "pm25", "ts": a, "value": v} for a, v in zip(ts, vals, strict=True)]
    # The same instants again in a later record (a second device message): all duplicates.
    again = [{"metric": "pm25", "ts": a, "value": 100.0} for a in ts]
    register_sensors(db, ["dup-1"], metrics=["pm25"])
    proc = start_worker("processor", stack, tmp_path)
    try:
        produce(
            stack,
            [
                ("dup-1", readings_record("dup-1", first)),
                ("dup-1", readings_record("dup-1", again)),
            ],
        )
        wait_until(lambda: count_readings(db) == 4, 30, "4 distinct readings")
        time.sleep(1.0)
    finally:
        procs.stop(proc)
    got = sorted(stored_keys(db).items())
    assert [v for _, v in got] == [4.0, 2.0, 3.0, 1.0]  # in ts order, first values
    assert_rollups_match_raw(db)


def test_nan_and_infinite_values_are_dead_lettered_and_never_reach_the_rollups(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    t = _now_ms() - 60_000
    good = readings_record("nan-1", [{"metric": "pm25", "ts": t, "value": 5.0}])
    # Only a foreign producer can write these: the gateway rejects them (non_finite_value).
    bad = [
        b'{"sensor":"nan-1","rx":0,"metric":"pm25","ts":%d,"value":NaN}' % (t + 1000),
        b'{"sensor":"nan-1","rx":0,"metric":"pm25","ts":%d,"value":1e999}' % (t + 2000),
        b'{"sensor":"nan-1","rx":0,"metric":"pm25","ts":%d,"value":-Infinity}' % (t + 3000),
        b'{"sensor":"nan-1","rx":0,"metric":"pm25","ts":%d,"value":"nan"}' % (t + 4000),
    ]
    register_sensors(db, ["nan-1"], metrics=["pm25"])
    proc = start_worker("processor", stack, tmp_path)
    try:
        produce(stack, [("nan-1", v) for v in [*bad[:2], good, *bad[2:]]])
        letters = read_deadletters(stack, expect=len(bad))
        wait_until(lambda: count_readings(db) == 1, 30, "the valid reading stored")
        assert proc.poll() is None
    finally:
        procs.stop(proc)
    assert sorted(x.value for x in letters) == sorted(bad)
    assert {x.reason for x in letters} == {Reason.UNDECODABLE_RECORD.value}
    assert db.execute("SELECT count, sum, m2 FROM rollups_1d").fetchall() == [(1, 5.0, 0.0)]
    assert_rollups_match_raw(db)


def _peak_rss(pid: int, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        try:
            out.append(rss_mb(pid))
        except (OSError, AssertionError):
            return
        stop.wait(0.2)


def test_a_million_readings_of_one_sensor_are_stored_exactly_with_bounded_memory(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    n = 1_000_000
    end = _now_ms()
    step = 150  # ms: the burst spans 41.7 hours, beyond the 24 h late horizon
    readings = [
        {"metric": "level", "ts": end - (n - i) * step, "value": round((i % 977) * 0.25, 2)}
        for i in range(n)
    ]
    # The gateway's own cut of a large value into records of at most MAX_RECORD_BYTES.
    value = readings_record("burst-1", readings, rx=end)
    parts = _split("burst-1", n, value)
    assert len(parts) > 300 and all(len(p[2]) <= MAX_RECORD_BYTES for p in parts)
    register_sensors(db, ["burst-1"], metrics=["level"])
    produce(stack, [(s, v) for s, _, v in parts])
    del readings, value
    env = {"MEETNET_PROCESSOR_FETCH_MAX_BYTES": str(8 * 1024 * 1024)}
    proc = start_worker("processor", stack, tmp_path, env)
    samples: list[float] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_peak_rss, args=(proc.pid, stop, samples), daemon=True)
    watcher.start()
    try:
        wait_until(lambda: count_readings(db) == n, 240, f"{n} readings stored", every=1.0)
        wait_until(lambda: pending_repairs(db) == 0, 60, "late buckets repaired")
    finally:
        stop.set()
        procs.stop(proc)
    log = (tmp_path / "processor.log").read_text()
    biggest = max(int(x) for x in re.findall(r"max_batch_readings=(\d+)", log))
    # A fetch holds at most 8 MiB of records (~90,000 of these lines) whatever the burst.
    assert biggest <= 8 * 1024 * 1024 // 80, biggest
    print(f"processor RSS peaked at {max(samples):.0f} MB; largest batch {biggest} readings")
    assert max(samples) < 400, f"processor RSS peaked at {max(samples):.0f} MB"
    assert "late_buckets=0" not in log.split("processor stopped")[-1]
    assert_rollups_match_raw(db)


def test_a_device_clock_jump_is_stored_or_dead_lettered_and_rollups_stay_exact(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    now = _now_ms()
    day = 86_400_000
    # Normal, then the clock jumps back 3 days, ahead by a year, to 1970, and recovers.
    stamps = [now - 5000, now - 3 * day, now - 3 * day + 1000, now + 365 * day, 0, now - 4000]
    record = readings_record(
        "jump-1", [{"metric": "pm25", "ts": t, "value": float(i)} for i, t in enumerate(stamps)]
    )
    env = {"MEETNET_ROLLUP_LATE_HORIZON_S": "3600", "MEETNET_ROLLUP_REPAIR_INTERVAL_S": "0.3"}
    register_sensors(db, ["jump-1"], metrics=["pm25"])
    proc = start_worker("processor", stack, tmp_path, env)
    try:
        produce(stack, [("jump-1", record)])
        letters = read_deadletters(stack, expect=1)
        wait_until(lambda: count_readings(db) == 4, 30, "4 readings in the window stored")
        wait_until(lambda: pending_repairs(db) == 0, 30, "late buckets repaired")
    finally:
        procs.stop(proc)
    assert [x.reason for x in letters] == [Reason.TIMESTAMP_OUT_OF_RANGE.value]
    assert letters[0].value.count(b'"ts"') == 2  # the year-ahead and the 1970 reading
    # No chunk was created for the far future or the distant past.
    lo, hi = db.execute(
        "SELECT min(range_start), max(range_end) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings'"
    ).fetchone() or (None, None)
    assert lo is not None and hi is not None
    assert (hi - lo).days <= 6
    assert_rollups_match_raw(db)


def test_a_processor_clock_jump_moves_buckets_to_the_repair_and_rollups_stay_exact(
    stack: Settings, db: psycopg.Connection
) -> None:
    """The processor's own clock jumps two days ahead, then back: the same readings are on
    time, then late (queued and recomputed), then on time again; nothing is lost."""
    base = _now_ms() - 600_000
    clock = {"offset": 0.0}
    s = stack.model_copy(update={"rollup_late_horizon_s": 3600, "rollup_repair_interval_s": 0.3})
    register_sensors(db, ["clock-1"], metrics=["pm25"])
    proc = Processor(s, clock=lambda: time.time() + clock["offset"])

    def record(k: int) -> tuple[str, bytes]:
        rs = [
            {"metric": "pm25", "ts": base + k * 10_000 + j, "value": float(k + j)} for j in range(5)
        ]
        return ("clock-1", readings_record("clock-1", rs))

    async def scenario() -> None:
        task = asyncio.create_task(proc.run())
        try:
            for k, offset in enumerate([0, 2 * 86400, 2 * 86400, 0, 0]):
                clock["offset"] = offset
                await asyncio.to_thread(produce, stack, [record(k)])
                await _until(lambda k=k: count_readings(db) == 5 * (k + 1))
            await _until(lambda: pending_repairs(db) == 0)
        finally:
            proc.stop()
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert proc.stats.late_buckets > 0 and proc.stats.repaired_buckets > 0
    assert_rollups_match_raw(db)


async def _until(pred: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)

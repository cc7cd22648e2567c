"""The rollup invariant, property-style, on the real processor: after a random mix of replays,
duplicate deliveries, kills and restarts, out-of-order, late (beyond the horizon) and slightly
future readings, every row of every rollup table equals the same aggregation computed from
scratch over ``readings``, and ``latest`` holds the newest reading of every series."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from meetnet import procs
from meetnet.settings import Settings
from tests.conftest import settings_env
from tests.support import (
    assert_rollups_match_raw,
    pending_repairs,
    readings_record,
    register_sensors,
    start_worker,
    stored_keys,
    wait_until,
)

pytestmark = pytest.mark.integration

SENSORS = [f"inv-{i}" for i in range(8)]
METRICS = ("pm25", "no2", "temperature")
HORIZON_S = 6 * 3600


def _scenario(
    rng: np.random.Generator, now_ms: int, steps: int
) -> tuple[list[list[tuple[str, bytes]]], dict[tuple[str, str, int], float]]:
    """Chunks of records to produce, and what must be stored: the first value of every
    (sensor, metric, ts) in production order (all records of a sensor share a partition)."""
    chunks = []
    expected: dict[tuple[str, str, int], float] = {}
    for _ in range(steps):
        chunk = []
        for sid in rng.choice(SENSORS, size=int(rng.integers(1, len(SENSORS) + 1)), replace=False):
            n = int(rng.integers(1, 25))
            kind = rng.choice(["recent", "late", "future"], p=[0.7, 0.25, 0.05])
            if kind == "recent":
                ts = now_ms - rng.integers(0, 2 * 3600_000, n)
            elif kind == "late":  # older than the horizon: stored, repaired from raw
                ts = now_ms - rng.integers(HORIZON_S * 1000 + 60_000, 5 * 86400_000, n)
            else:  # ahead of the processor's clock, within the accepted skew
                ts = now_ms + rng.integers(0, 300_000, n)
            ts = ts - ts % 1000  # whole seconds: keys repeat now and then
            if n > 3:  # the same instant twice in one record, maybe with another value
                ts[-1] = ts[0]
            readings = [
                {
                    "metric": str(rng.choice(METRICS)),
                    "ts": int(t),
                    "value": round(float(rng.normal(25, 10)), 3),
                }
                for t in ts  # in no particular order
            ]
            for r in readings:
                key = (str(sid), str(r["metric"]), int(r["ts"]) * 1000)
                expected.setdefault(key, float(r["value"]))
            chunk.append((str(sid), readings_record(str(sid), readings, rx=now_ms)))
        chunks.append(chunk)
    return chunks, expected


@pytest.mark.parametrize("seed", [1, 2])
def test_rollups_equal_a_from_scratch_aggregation_after_replays_kills_and_late_data(
    stack: Settings, db: psycopg.Connection, tmp_path: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    now_ms = int(time.time() * 1000)
    chunks, expected = _scenario(rng, now_ms, steps=30)
    env = {
        "MEETNET_PROCESSOR_MAX_RECORDS": str(int(rng.integers(3, 12))),
        "MEETNET_PROCESSOR_LINGER_MS": "0",
        "MEETNET_ROLLUP_LATE_HORIZON_S": str(HORIZON_S),
        "MEETNET_ROLLUP_REPAIR_INTERVAL_S": "0.3",
        # A killed member holds its partitions until its session times out.
        "MEETNET_PROCESSOR_SESSION_TIMEOUT_MS": "6000",
    }
    actions: list[str] = []
    register_sensors(db, SENSORS, metrics=METRICS)
    proc = start_worker("processor", stack, tmp_path, env)

    async def drive() -> None:
        nonlocal proc
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        await producer.start()

        async def send(chunk: list[tuple[str, bytes]]) -> None:
            sent = [
                await producer.send(stack.kafka_readings_topic, v, key=k.encode()) for k, v in chunk
            ]
            await asyncio.gather(*sent)

        try:
            for k, chunk in enumerate(chunks):
                await send(chunk)
                action = str(
                    rng.choice(
                        ["none", "replay", "kill", "restart", "wait"],
                        p=[0.55, 0.2, 0.1, 0.05, 0.1],
                    )
                )
                actions.append(action)
                if action == "replay":  # a chunk delivered again (a gateway retry)
                    await send(chunks[int(rng.integers(0, k + 1))])
                elif action == "kill":  # anywhere, mid-batch included
                    await asyncio.sleep(float(rng.uniform(0, 0.4)))
                    procs.kill9(proc)
                    proc = start_worker("processor", stack, tmp_path, env)
                elif action == "restart":
                    procs.stop(proc)
                    proc = start_worker("processor", stack, tmp_path, env)
                elif action == "wait":
                    await asyncio.sleep(0.5)
        finally:
            await producer.stop()

    try:
        asyncio.run(drive())
        wait_until(lambda: len(stored_keys(db)) >= len(expected), 120, "every reading stored")
        wait_until(lambda: pending_repairs(db) == 0, 60, "late buckets repaired")
        time.sleep(1.0)  # a straggler would show up now
        wait_until(lambda: pending_repairs(db) == 0, 30, "late buckets repaired")
    finally:
        procs.stop(proc)

    assert "kill" in actions and "replay" in actions, f"a weak scenario: {actions}"
    stored = stored_keys(db)
    assert db.execute("SELECT count(*) FROM readings").fetchone() == (len(expected),)
    assert stored == expected
    assert_rollups_match_raw(db)
    # The operator's recompute from scratch agrees with what the processor maintained.
    before = {t: _count(db, t) for t in TABLES}
    out = subprocess.run(
        [sys.executable, "-m", "meetnet", "rollups", "rebuild"],
        env={**os.environ, **settings_env(stack)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "recomputed" in out.stdout
    assert {t: _count(db, t) for t in TABLES} == before
    assert_rollups_match_raw(db)


TABLES = ("rollups_1m", "rollups_15m", "rollups_1h", "rollups_1d", "rollups_1d_local")


def _count(db: psycopg.Connection, table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0

"""Two processors in one consumer group share the partitions; one is killed with SIGKILL in the
middle of a batch; every reading is stored exactly once and every rollup is exact."""

from __future__ import annotations

import re
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
    pending_repairs,
    produce,
    readings_record,
    register_sensors,
    start_worker,
    stored_keys,
    wait_until,
)

pytestmark = pytest.mark.integration

SENSORS = 60
METRICS = ("pm25", "no2")


def _assigned(log: Path) -> list[set[int]]:
    """Every assignment a processor logged, in order."""
    text = log.read_text() if log.exists() else ""
    return [
        {int(p) for p in re.findall(r"\d+", m)}
        for m in re.findall(r"partitions assigned partitions=\"?\[([^\]]*)\]", text)
    ]


@pytest.fixture
def slow_db() -> Iterator[TcpProxy]:
    target = urlsplit(TEST_DB)
    p = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    p.delay_s = 0.005  # the victim's writes take a while, so the kill lands inside one
    try:
        yield p
    finally:
        p.close()


def test_two_processors_share_partitions_and_a_kill_mid_batch_loses_and_duplicates_nothing(
    stack: Settings, db: psycopg.Connection, tmp_path: Path, slow_db: TcpProxy
) -> None:
    rng = np.random.default_rng(11)
    now_ms = int(time.time()) * 1000
    expected: dict[tuple[str, str, int], float] = {}
    chunks: list[list[tuple[str, bytes]]] = []
    for k in range(40):
        chunk = []
        for i in range(SENSORS):
            sid = f"so-{i:03d}"
            # Mostly recent readings; every fifth chunk reaches back 1-3 days (late: repaired).
            back = int(rng.integers(1, 3 * 86400)) * 1000 if k % 5 == 0 else 0
            base = now_ms - 1_800_000 - back + k * 10_000
            readings = [
                {"metric": m, "ts": base + j * 1000, "value": round(float(rng.normal(30, 9)), 2)}
                for j in range(5)
                for m in METRICS
            ]
            for r in readings:
                expected.setdefault((sid, str(r["metric"]), int(r["ts"]) * 1000), float(r["value"]))
            chunk.append((sid, readings_record(sid, readings, rx=now_ms)))
        chunks.append(chunk)

    env = {
        "MEETNET_PROCESSOR_MAX_RECORDS": "60",
        "MEETNET_PROCESSOR_SESSION_TIMEOUT_MS": "6000",
        "MEETNET_ROLLUP_LATE_HORIZON_S": "3600",
        "MEETNET_ROLLUP_REPAIR_INTERVAL_S": "0.5",
    }
    register_sensors(db, [f"so-{i:03d}" for i in range(SENSORS)], metrics=METRICS)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    victim = start_worker(
        "processor", stack, tmp_path / "a", {**env, "MEETNET_DATABASE_URL": slow_db.url(TEST_DB)}
    )
    survivor = start_worker("processor", stack, tmp_path / "b", env)
    logs = (tmp_path / "a" / "processor.log", tmp_path / "b" / "processor.log")
    try:

        def shared() -> bool:
            last = [a[-1] if a else set() for a in map(_assigned, logs)]
            return all(last) and not (last[0] & last[1]) and len(last[0] | last[1]) == 6

        wait_until(shared, 60, "both processors owning a share of the partitions")
        done = threading.Event()

        def publish() -> None:
            for k, chunk in enumerate(chunks):
                produce(stack, chunk)
                if k % 7 == 3:  # a duplicate delivery of an earlier chunk
                    produce(stack, chunks[k - 2])
                time.sleep(0.1)
            done.set()

        threading.Thread(target=publish, daemon=True).start()
        wait_until(lambda: _writing(db), 30, "the first readings stored")
        time.sleep(1.5)
        procs.kill9(victim)
        assert done.wait(60), "publisher did not finish"
        wait_until(lambda: _assigned(logs[1])[-1] == set(range(6)), 60, "survivor takes over")
        wait_until(lambda: len(stored_keys(db)) >= len(expected), 120, "every reading stored")
        wait_until(lambda: pending_repairs(db) == 0, 60, "late buckets repaired")
        time.sleep(1.0)  # anything still in flight would show up as an extra row now
    finally:
        procs.stop(victim)
        procs.stop(survivor)

    stored = stored_keys(db)
    rows = db.execute("SELECT count(*) FROM readings").fetchone()
    assert rows == (len(expected),), "a reading was stored twice"
    assert stored == expected, "lost or altered readings"
    assert_rollups_match_raw(db)


def _writing(db: psycopg.Connection) -> bool:
    row = db.execute("SELECT count(*) FROM readings").fetchone()
    return bool(row and row[0] > 0)

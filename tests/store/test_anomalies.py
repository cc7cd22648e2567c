"""Flags, snapshots and the registry view on the real TimescaleDB."""

from __future__ import annotations

import asyncio

import numpy as np
import psycopg
import pytest

from store.anomalies import load_registry, load_snapshot, save_snapshot, write_flags
from stream.detect import Detector
from tests.stream.detect.support import batch, detector, minutes, noisy, registry
from tests.support import register_sensors

pytestmark = pytest.mark.integration


def broken_sensor() -> tuple[Detector, list]:
    """A sensor out of range for a while, seen in three batches."""
    det = detector(registry(["s-1"]))
    x = noisy(300)
    x[100:120] = 2000.0
    cuts = ((0, 110), (110, 200), (200, 300))  # opens in the first, resolves in the second
    return det, [det.process(batch("s-1", minutes(b - a, a), x[a:b]), None) for a, b in cuts]


def rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT anomaly_id, kind, state, n_readings, last_ts, resolved_at IS NOT NULL "
        "FROM anomalies ORDER BY anomaly_id"
    ).fetchall()


async def _write_all(dsn: str, results: list, *, rollback: bool = False) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        try:
            async with conn.transaction():
                for r in results:
                    await write_flags(conn, r.flags)
                if rollback:
                    raise RuntimeError("the batch failed")
        except RuntimeError:
            pass


def test_one_broken_sensor_is_one_row_that_grows_and_resolves(
    db: psycopg.Connection, migrated_db: str
) -> None:
    _, results = broken_sensor()
    asyncio.run(_write_all(migrated_db, results[:1]))
    [(aid, kind, state, n, _, resolved)] = rows(db)
    assert (kind, state, n, resolved) == ("range", "open", 10, False)
    asyncio.run(_write_all(migrated_db, results[1:]))
    assert rows(db)[0][:4] == (aid, "range", "resolved", 20) and rows(db)[0][5] is True


def test_replayed_and_older_flags_never_move_a_row_backwards(
    db: psycopg.Connection, migrated_db: str
) -> None:
    _, results = broken_sensor()
    asyncio.run(_write_all(migrated_db, results))
    final = rows(db)
    asyncio.run(_write_all(migrated_db, results))  # a replay, in order
    asyncio.run(_write_all(migrated_db, results[:1]))  # an older version of the flag
    assert rows(db) == final and len(final) == 1


def test_nothing_is_written_when_the_caller_s_transaction_rolls_back(
    db: psycopg.Connection, migrated_db: str
) -> None:
    det, results = broken_sensor()

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(migrated_db) as conn:
            try:
                async with conn.transaction():
                    await write_flags(conn, results[0].flags)
                    await save_snapshot(conn, "g/t/0", det.snapshot(), 300)
                    raise RuntimeError("COPY of the readings failed")
            except RuntimeError:
                pass
            assert await load_snapshot(conn, "g/t/0") is None

    asyncio.run(scenario())
    assert rows(db) == []


def test_a_restored_snapshot_continues_the_detection(
    db: psycopg.Connection, migrated_db: str
) -> None:
    det, _ = broken_sensor()

    async def scenario() -> bytes:
        async with await psycopg.AsyncConnection.connect(migrated_db) as conn:
            async with conn.transaction():
                await save_snapshot(conn, "g/t/0", det.snapshot(), 300)
            snap = await load_snapshot(conn, "g/t/0")
            assert snap is not None and snap.kafka_offset == 300
            return snap.state

    restored = Detector.restore(asyncio.run(scenario()))
    more = noisy(60, seed=9)
    more[30] = -1.0
    a = det.process(batch("s-1", minutes(60, 300), more), None).flags
    b = restored.process(batch("s-1", minutes(60, 300), more), None).flags
    assert a.equals(b) and a["kind"].to_list() == ["range"]


def test_the_registry_view_has_every_active_sensor_s_metrics(
    db: psycopg.Connection, migrated_db: str
) -> None:
    register_sensors(db, ["r-1", "r-2"], metrics=["pm25", "no2"])
    db.execute('UPDATE sensor_types SET detection = \'{"spike": {"z": 8}}\'')
    db.execute("UPDATE sensors SET status = 'retired' WHERE sensor_id = 'r-2'")
    db.execute("INSERT INTO series (sensor_id, metric) VALUES ('r-1', 'no2')")

    async def scenario():
        async with await psycopg.AsyncConnection.connect(migrated_db) as conn:
            return await load_registry(conn)

    reg = asyncio.run(scenario()).sort("metric")
    assert reg["sensor"].to_list() == ["r-1", "r-1"] and reg["metric"].to_list() == ["no2", "pm25"]
    assert reg["series_id"][0] is not None and reg["series_id"][1] is None
    det = Detector()
    det.update_registry(reg)
    assert float(det.st.spike_z[0]) == 8.0 and int(det.st.allowed_us[0]) == 180_000_000
    assert np.isfinite(det.st.min_v[:2]).all()

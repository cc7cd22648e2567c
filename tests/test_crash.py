"""kill -9 the processor or the gateway mid-stream, again and again: nothing lost, nothing twice."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from meetnet import procs
from meetnet.settings import Settings
from tests.support import (
    PUBACK_REASONS,
    assert_rollups_match_raw,
    pipeline_state,
    publish_all,
    publisher,
    register_sensors,
    start_worker,
    wait_subscribed,
    wait_until,
)

pytestmark = pytest.mark.integration

SENSORS = 40
METRICS = ("pm25", "pm10", "no2", "temperature", "humidity")


def _messages(s: Settings, rounds: int, t0: int) -> tuple[list[tuple[str, bytes]], set[tuple]]:
    """``rounds`` ticks of every sensor reporting every metric, one batch message per sensor."""
    msgs = []
    expected = set()
    for k in range(rounds):
        ts = t0 + k * 1000
        for i in range(SENSORS):
            sid = f"crash-{i:03d}"
            readings = [
                {"metric": m, "ts": ts, "value": round(i + k * 0.5 + j * 0.01, 4)}
                for j, m in enumerate(METRICS)
            ]
            expected.update((sid, r["metric"], ts, r["value"]) for r in readings)
            msgs.append(
                (
                    f"{s.mqtt_topic_prefix}/sensors/{sid}",
                    json.dumps({"readings": readings}).encode(),
                )
            )
    return msgs, expected


def _stored(db: psycopg.Connection) -> list[tuple]:
    rows = db.execute(
        "SELECT s.sensor_id, s.metric, (extract(epoch FROM r.ts) * 1000)::bigint, r.value "
        "FROM readings r JOIN series s USING (series_id) WHERE s.sensor_id LIKE 'crash-%%'"
    ).fetchall()
    return [tuple(r) for r in rows]


def _run_with_kills(
    stack: Settings, db: psycopg.Connection, tmp_path: Path, victim: str, kills: int
) -> None:
    t0 = (int(time.time()) - 3600) * 1000
    msgs, expected = _messages(stack, rounds=200, t0=t0)  # 8,000 messages, 40,000 readings
    register_sensors(db, [f"crash-{i:03d}" for i in range(SENSORS)], metrics=METRICS)
    env = {
        "MEETNET_GATEWAY_CLIENT_ID": f"crash-gw-{victim}",
        "MEETNET_PROCESSOR_MAX_RECORDS": "500",
    }
    workers = {
        "gateway": start_worker("gateway", stack, tmp_path, env),
        "processor": start_worker("processor", stack, tmp_path, env),
    }
    wait_subscribed(tmp_path / "gateway.log")
    PUBACK_REASONS.clear()
    client = publisher(stack, client_id=f"crash-pub-{victim}")
    done = threading.Event()

    def _publish() -> None:
        # Paced so the kills land while data is flowing.
        step = 400
        for i in range(0, len(msgs), step):
            publish_all(stack, msgs[i : i + step], client=client)
            time.sleep(0.25)
        done.set()

    pub = threading.Thread(target=_publish, daemon=True)
    pub.start()
    try:
        for _ in range(kills):
            time.sleep(0.9)
            procs.kill9(workers[victim])
            time.sleep(0.3)
            workers[victim] = start_worker(victim, stack, tmp_path, env)
        pub.join(timeout=120)
        assert done.is_set(), "publisher did not finish"
        try:
            wait_until(
                lambda: len(_stored(db)) >= len(expected), 120, f"{len(expected)} stored readings"
            )
        except AssertionError as e:
            if workers["gateway"].poll() is None:  # ask the gateway where the readings are
                workers["gateway"].send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            raise AssertionError(
                f"{e}; stored {len(_stored(db))}; {pipeline_state(stack)}; "
                f"non-success PUBACKs {PUBACK_REASONS}"
            ) from None
        time.sleep(2.0)  # anything still in flight would show up as an extra row now
    finally:
        client.loop_stop()
        client.disconnect()
        for w in workers.values():
            procs.stop(w)

    assert not PUBACK_REASONS, f"the broker refused or dropped publishes: {PUBACK_REASONS}"
    stored = _stored(db)
    assert len(stored) == len(expected), "duplicates or foreign rows"
    assert set(stored) == expected, "lost or altered readings"
    assert_rollups_match_raw(db)  # and every replay left the rollups exact


def test_processor_killed_repeatedly_loses_nothing_and_duplicates_nothing(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    _run_with_kills(stack, db, tmp_path, "processor", kills=5)


def test_gateway_killed_repeatedly_loses_nothing_and_duplicates_nothing(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    _run_with_kills(stack, db, tmp_path, "gateway", kills=5)

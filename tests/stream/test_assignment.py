"""More processors than partitions: the extra one says so and idles, nothing is processed twice,
and the workers' health endpoints tell Kubernetes who is live, ready and assigned what."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from meetnet import procs, services
from meetnet.settings import Settings
from tests.support import (
    count_readings,
    get_json,
    kafka_records,
    logged_count,
    publish_all,
    register_sensors,
    start_worker,
    wait_subscribed,
    wait_until,
)

pytestmark = pytest.mark.integration

SENSORS = [f"idle-{i:02d}" for i in range(20)]
METRICS = ("pm25", "pm10", "no2", "temperature", "humidity")


def _ready(port: int) -> dict | None:
    status, body = get_json(f"http://127.0.0.1:{port}/ready")
    return body if status == 200 else None


def test_a_processor_beyond_the_partition_count_idles_visibly_and_nothing_is_processed_twice(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    s = stack.model_copy(
        update={"kafka_readings_topic": stack.kafka_readings_topic + "-2p", "kafka_partitions": 2}
    )
    asyncio.run(services.ensure_topics(s))
    register_sensors(db, SENSORS, metrics=METRICS)
    gw_port = procs.free_port()
    ports = {f"processor-{i}": procs.free_port() for i in (1, 2, 3)}
    workers: dict[str, subprocess.Popen[bytes]] = {
        "gateway": start_worker(
            "gateway",
            s,
            tmp_path / "gateway",
            {
                "MEETNET_GATEWAY_CLIENT_ID": f"idle-gw-{s.mqtt_share_group}",
                "MEETNET_HEALTH_PORT": str(gw_port),
            },
        )
    }
    try:
        for name, port in ports.items():
            workers[name] = start_worker(
                "processor", s, tmp_path / name, {"MEETNET_HEALTH_PORT": str(port)}
            )

        # The group settles with both partitions taken and one member without any.
        def settled() -> dict[str, list[int]] | None:
            bodies = {n: _ready(p) for n, p in ports.items()}
            if any(b is None for b in bodies.values()):
                return None
            parts = {n: b["partitions"] for n, b in bodies.items() if b is not None}
            owned = sorted(p for ps in parts.values() for p in ps)
            idle = [n for n, ps in parts.items() if ps == []]
            return parts if owned == [0, 1] and len(idle) == 1 else None

        parts = wait_until(lambda: settled() is not None, 60, "a settled group") or settled()
        assert parts is not None
        idle = next(n for n, ps in parts.items() if ps == [])
        assert _ready(ports[idle])["idle"] is True  # type: ignore[index]
        wait_until(
            lambda: (
                "no partitions assigned: 3 members for 2 partitions; this processor idles"
                in (tmp_path / idle / "processor.log").read_text()
            ),
            15,
            f"the idle message in {idle}'s log",
        )
        wait_subscribed(tmp_path / "gateway" / "gateway.log")
        gw = _ready(gw_port)
        assert gw is not None and gw["checks"] == {"mqtt": "ok", "kafka": "ok"}, gw

        now = (int(time.time()) - 600) * 1000
        messages = [
            (
                f"{s.mqtt_topic_prefix}/sensors/{sid}",
                json.dumps(
                    {"readings": [{"metric": m, "ts": now + k * 1000, "value": k} for m in METRICS]}
                ).encode(),
            )
            for k in range(20)
            for sid in SENSORS
        ]
        publish_all(s, messages)
        expected = len(messages) * len(METRICS)
        wait_until(lambda: count_readings(db) == expected, 60, f"{expected} stored readings")
        time.sleep(1.0)  # the last offsets commit right after the database commit
    finally:
        for w in workers.values():
            procs.stop(w)

    assert count_readings(db) == expected
    handled = {
        n: logged_count(tmp_path / n / "processor.log", "processor stopped", "records")
        for n in ports
    }
    assert handled[idle] == 0, handled
    # Every record in Kafka was processed by exactly one processor: none twice, none skipped.
    assert sum(handled.values()) == kafka_records(s) == len(messages), handled

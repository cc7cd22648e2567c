"""Helpers for integration tests: run workers as real processes, publish over MQTT, read Kafka."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from aiokafka import AIOKafkaConsumer

from meetnet import procs
from meetnet.settings import Settings
from tests.conftest import assert_brokers_alive, settings_env


def start_worker(
    name: str, s: Settings, log_dir: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run `python -m meetnet <name>` (gateway, processor, ...) against the settings ``s``."""
    return procs.spawn(
        [sys.executable, "-m", "meetnet", name],
        log=log_dir / f"{name}.log",
        env={**settings_env(s), "MEETNET_LOG_LEVEL": "INFO", **(env or {})},
    )


# PUBACK reason codes seen by test publishers other than success: Mosquitto answers an MQTT v5
# publisher with 16 ("No matching subscribers") when nobody was subscribed to the topic, so a
# test that loses messages can tell the broker's view from the gateway's.
PUBACK_REASONS: dict[str, int] = {}


def _on_publish(client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
    name = str(rc)
    if getattr(rc, "value", 0) != 0:
        PUBACK_REASONS[name] = PUBACK_REASONS.get(name, 0) + 1


def wait_subscribed(log: Path, times: int = 1, timeout: float = 60) -> None:
    """Wait until a gateway logged its SUBACK ``times`` times (once per start). Messages
    published to a share group before its first subscription exists are dropped by the broker
    (MQTT semantics), so tests publish only after this."""

    def _count() -> int:
        try:
            return log.read_text().count(" subscribed ")
        except FileNotFoundError:
            return 0

    wait_until(lambda: _count() >= times, timeout, f"gateway subscription in {log}")


def publisher(s: Settings, client_id: str = "") -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.on_publish = _on_publish
    c.connect(s.mqtt_host, s.mqtt_port)
    c.loop_start()
    return c


def publish_all(
    s: Settings, messages: Iterable[tuple[str, bytes]], client: mqtt.Client | None = None
) -> int:
    """Publish (topic, payload) pairs with QoS 1 and wait for every PUBACK."""
    own = client is None
    c = client or publisher(s)
    infos = [c.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(timeout=60)
        assert info.is_published(), "broker did not acknowledge a publish"
    if own:
        c.loop_stop()
        c.disconnect()
    return len(infos)


def wait_until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        assert_brokers_alive()
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def count_readings(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


@dataclass
class DeadLetter:
    value: bytes
    key: bytes | None
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        return self.headers["meetnet.reason"]


def read_deadletters(s: Settings, expect: int, timeout: float = 30) -> list[DeadLetter]:
    """Read the dead-letter topic from the beginning until ``expect`` records (or timeout)."""

    async def _read() -> list[DeadLetter]:
        consumer = AIOKafkaConsumer(
            s.kafka_deadletter_topic,
            bootstrap_servers=s.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        out: list[DeadLetter] = []
        try:
            deadline = time.monotonic() + timeout
            while len(out) < expect and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for recs in batch.values():
                    for r in recs:
                        out.append(
                            DeadLetter(
                                r.value or b"",
                                r.key,
                                {k: v.decode() for k, v in r.headers},
                            )
                        )
            # Nothing more should arrive: give stragglers a moment to show up.
            extra = await consumer.getmany(timeout_ms=1000)
            for recs in extra.values():
                for r in recs:
                    out.append(
                        DeadLetter(r.value or b"", r.key, {k: v.decode() for k, v in r.headers})
                    )
        finally:
            await consumer.stop()
        return out

    return asyncio.run(_read())


def pipeline_state(s: Settings) -> str:
    """Where readings are when a test waits in vain: Kafka lag of the processors' group."""
    from meetnet.services import consumer_lag

    try:
        return f"kafka consumer lag {asyncio.run(consumer_lag(s))} records"
    except Exception as e:  # diagnostics must not hide the real failure
        return f"(pipeline state unavailable: {e})"


# The metrics tests publish unless they say otherwise: the simulator's air-quality set.
TEST_METRICS = ("pm25", "pm10", "no2", "temperature", "humidity", "value")


def register_sensors(
    conn: psycopg.Connection,
    sensor_ids: Iterable[str],
    *,
    municipality: str = "44021",
    type_id: str = "test-box",
    metrics: Iterable[str] = TEST_METRICS,
    gateway: str | None = None,
    visibility: str = "public",
) -> None:
    """Register sensors (and their municipality, type and gateway when missing) directly in the
    registry tables, so integration tests can publish for them."""
    metrics = list(metrics)
    with conn.transaction():
        conn.execute(
            "INSERT INTO municipalities (nis_code, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (municipality, f"municipality {municipality}"),
        )
        conn.execute(
            "INSERT INTO sensor_types (type_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (type_id, f"type {type_id}"),
        )
        conn.execute(
            "INSERT INTO sensor_type_metrics (type_id, metric, unit, min_value, max_value,"
            " interval_s) SELECT %s, m, '1', -1e9, 1e9, 60 FROM unnest(%s::text[]) m"
            " ON CONFLICT DO NOTHING",
            (type_id, metrics),
        )
        if gateway is not None:
            conn.execute(
                "INSERT INTO gateways (gateway_id, municipality) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (gateway, municipality),
            )
        conn.execute(
            "INSERT INTO sensors (sensor_id, municipality, type_id, gateway_id, lat, lon,"
            " visibility) SELECT s, %s, %s, %s, 51.05, 3.72, %s FROM unnest(%s::text[]) s"
            " ON CONFLICT DO NOTHING",
            (municipality, type_id, gateway, visibility, list(sensor_ids)),
        )


_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, timeout: float = 3) -> tuple[int, Any]:
    """(status, decoded JSON body) of a GET; (0, None) when nothing answers."""
    try:
        with _http.open(url, timeout=timeout) as r:
            return int(r.status), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def kafka_records(s: Settings, quiet_s: float = 1.5) -> int:
    """Records in the readings topic, counted by reading it from the start until nothing more
    arrives for ``quiet_s`` (the local broker's ListOffsets answers the last batch's base
    offset + 1, not the high watermark, so end offsets cannot count records)."""

    async def _count() -> int:
        consumer = AIOKafkaConsumer(
            s.kafka_readings_topic,
            bootstrap_servers=s.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        n = 0
        try:
            while batch := await consumer.getmany(timeout_ms=int(quiet_s * 1000)):
                n += sum(len(recs) for recs in batch.values())
        finally:
            await consumer.stop()
        return n

    return asyncio.run(_count())


def logged_count(log: Path, message: str, key: str) -> int:
    """The integer ``key=`` of the last ``message`` line in a worker's text log."""
    text = log.read_text()
    line = text.rsplit(message, 1)[1].split("\n", 1)[0]
    return int(line.split(f"{key}=", 1)[1].split()[0])

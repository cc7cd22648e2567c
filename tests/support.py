"""Helpers for integration tests: run workers as real processes, publish over MQTT, read Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as mqtt
import polars as pl
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

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


# --- rollups: the invariant, checked against an independent from-scratch aggregation --------
# TimescaleDB's time_bucket (not the code under test's date_bin/date_trunc) puts each raw
# reading in its bucket; first/last come from array_agg ordered by ts.
_SCRATCH_BUCKETS = {
    "rollups_1m": "time_bucket(INTERVAL '1 minute', ts)",
    "rollups_15m": "time_bucket(INTERVAL '15 minutes', ts)",
    "rollups_1h": "time_bucket(INTERVAL '1 hour', ts)",
    "rollups_1d": "time_bucket(INTERVAL '1 day', ts)",
    "rollups_1d_local": "time_bucket(INTERVAL '1 day', ts, 'Europe/Brussels')",
}
_ROLLUP_COLS = (
    "series_id, bucket, count, sum, mean, m2, min, max, first_ts, first_value, last_ts, last_value"
)


def _frame(conn: psycopg.Connection, query: str) -> pl.DataFrame:
    cur = conn.execute(query)
    names = [d.name for d in cur.description or []]
    return pl.DataFrame(cur.fetchall(), schema=names, orient="row", infer_schema_length=None)


def rollup_mismatches(conn: psycopg.Connection, *, rel: float = 1e-9) -> list[str]:
    """Every difference between the rollup tables (and ``latest``) and the same aggregation
    computed from scratch over ``readings``: count, min, max, first and last exactly; sum,
    mean and the standard deviation within ``rel`` (relative, scaled by the magnitude of the
    values, since float sums depend on the order of addition)."""
    problems: list[str] = []
    for table, bucket in _SCRATCH_BUCKETS.items():
        want = _frame(
            conn,
            f"SELECT series_id, {bucket} AS bucket, count(*) AS count, sum(value) AS sum, "
            "avg(value) AS mean, var_pop(value) * count(*) AS m2, min(value) AS min, "
            "max(value) AS max, min(ts) AS first_ts, "
            "(array_agg(value ORDER BY ts))[1] AS first_value, max(ts) AS last_ts, "
            "(array_agg(value ORDER BY ts DESC))[1] AS last_value "
            "FROM readings GROUP BY 1, 2",
        )
        got = _frame(conn, f"SELECT {_ROLLUP_COLS} FROM {table}")
        if want.height == 0 and got.height == 0:
            continue
        j = want.join(got, on=["series_id", "bucket"], how="full", suffix="_got", coalesce=True)
        missing = j.filter(pl.col("count_got").is_null())
        extra = j.filter(pl.col("count").is_null())
        if missing.height:
            problems.append(f"{table}: {missing.height} buckets missing, e.g. {missing.row(0)}")
        if extra.height:
            problems.append(f"{table}: {extra.height} buckets without readings: {extra.row(0)}")
        both = j.filter(pl.col("count").is_not_null() & pl.col("count_got").is_not_null())
        for col in ("count", "min", "max", "first_ts", "first_value", "last_ts", "last_value"):
            bad = both.filter(pl.col(col) != pl.col(f"{col}_got"))
            if bad.height:
                problems.append(
                    f"{table}.{col}: {bad.height} buckets differ, e.g. "
                    f"{bad.select('series_id', 'bucket', col, f'{col}_got').row(0)}"
                )
        scale = pl.max_horizontal(pl.col("min").abs(), pl.col("max").abs(), pl.lit(1.0))
        checks = {
            "sum": (pl.col("sum"), pl.col("sum_got"), scale * pl.col("count")),
            "mean": (pl.col("mean"), pl.col("mean_got"), scale),
            "stddev": (
                (pl.col("m2") / pl.col("count")).sqrt(),
                (pl.col("m2_got") / pl.col("count_got")).sqrt(),
                scale,
            ),
        }
        for name, (a, b, mag) in checks.items():
            bad = both.filter((a - b).abs() > rel * mag)
            if bad.height:
                problems.append(
                    f"{table}.{name}: {bad.height} buckets off by more than {rel:g}, e.g. "
                    f"{bad.select('series_id', 'bucket', a.alias('want'), b.alias('got')).row(0)}"
                )
    want_latest = _frame(
        conn,
        "SELECT DISTINCT ON (series_id) series_id, ts, value FROM readings "
        "ORDER BY series_id, ts DESC",
    )
    got_latest = _frame(conn, "SELECT series_id, ts, value FROM latest")
    diff = want_latest.join(got_latest, on="series_id", how="full", coalesce=True).filter(
        (pl.col("ts") != pl.col("ts_right")).fill_null(True)
        | (pl.col("value") != pl.col("value_right")).fill_null(True)
    )
    if diff.height:
        problems.append(f"latest: {diff.height} series differ, e.g. {diff.row(0)}")
    return problems


def assert_rollups_match_raw(conn: psycopg.Connection) -> None:
    problems = rollup_mismatches(conn)
    assert not problems, "rollups differ from the raw readings:\n" + "\n".join(problems)


def pending_repairs(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM rollup_dirty").fetchone()
    return int(row[0]) if row else 0


# --- driving a processor directly through Kafka ------------------------------------------
def readings_record(sensor: str, readings: list[dict[str, Any]], rx: int = 0) -> bytes:
    """A readings record value exactly as the gateway builds it."""
    from meetnet.wire import encode_record

    return encode_record(sensor, rx, readings)  # type: ignore[arg-type]


def produce(s: Settings, records: Iterable[tuple[str, bytes]]) -> int:
    """Produce (key, value) records to the readings topic, acks=all; wait for all."""

    async def _go() -> int:
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", max_request_size=8 * 1024 * 1024
        )
        await producer.start()
        try:
            futures = [
                await producer.send(s.kafka_readings_topic, v, key=k.encode()) for k, v in records
            ]
            await asyncio.gather(*futures)
            return len(futures)
        finally:
            await producer.stop()

    return asyncio.run(_go())


def kafka_offsets(s: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """(end offset, offset committed by the processors' group) per readings partition."""

    async def _go() -> tuple[dict[int, int], dict[int, int]]:
        c = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.processor_group,
            enable_auto_commit=False,
        )
        await c.start()
        try:
            await c.topics()
            tps = [
                TopicPartition(s.kafka_readings_topic, p)
                for p in sorted(c.partitions_for_topic(s.kafka_readings_topic) or ())
            ]
            ends = await c.end_offsets(tps)
            done = {tp.partition: (await c.committed(tp)) or 0 for tp in tps}
            return {tp.partition: ends[tp] for tp in tps}, done
        finally:
            await c.stop()

    return asyncio.run(_go())


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def stored_keys(conn: psycopg.Connection) -> dict[tuple[str, str, int], float]:
    """(sensor, metric, epoch µs) -> value of every stored reading."""
    rows = conn.execute(
        "SELECT s.sensor_id, s.metric, "
        "(extract(epoch FROM r.ts) * 1000000)::bigint, r.value "
        "FROM readings r JOIN series s USING (series_id)"
    ).fetchall()
    return {(a, b, int(c)): float(d) for a, b, c, d in rows}


class TcpProxy:
    """A TCP forwarder in front of a server (PostgreSQL, in the tests), to take it away from a
    client without stopping it for everyone else: ``cut()`` drops every open connection and
    refuses new ones until ``restore()``; ``delay_s`` holds each forwarded chunk back."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.delay_s = 0.0
        self.down = False
        self.refused = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, dsn: str) -> str:
        """``dsn`` (postgresql://user:pw@host:port/db) pointed at the proxy."""
        parts = urlsplit(dsn)
        netloc = parts.netloc.rsplit("@", 1)
        auth = netloc[0] + "@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.down:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._socks |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                if self.delay_s:
                    time.sleep(self.delay_s)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._socks -= {src, dst}

    def cut(self) -> None:
        self.down = True
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self.server.close()
        self._thread.join(timeout=2)

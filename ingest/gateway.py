"""The MQTT -> Kafka ingest gateway.

Subscribes with QoS 1 on a persistent MQTT 3.1.1 session to ``$share/<group>/<prefix>/#`` (so
several gateways split the load), validates each message at the edge (meetnet/wire.py), and
produces it to Kafka with ``acks="all"``, keyed by sensor id. Each MQTT message is acknowledged
(``manual_ack``) only after Kafka acknowledged everything it became: its readings record(s) or
its dead letter. A gateway killed at any point leaves its un-acked messages with the broker,
which re-delivers them; duplicates are removed by the idempotent write downstream.

Invalid input never raises: it becomes a dead-letter record holding the original bytes, with
the reason, the MQTT topic and the receive time in headers. Counts per reason are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest.mqtt import AsyncioHelper, BufferedClient
from ingest.produce import PartitionBatcher
from meetnet import health
from meetnet.settings import Settings
from meetnet.wire import MAX_RECORD_BYTES, WireError, check_message, dlq_headers

log = logging.getLogger(__name__)

MAX_PENDING = 50_000  # received, not yet forwarded: stop reading the socket above this
RESUME_PENDING = 10_000  # ... and read again below this (TCP pushes back on the broker)
STOP_FLUSH_S = 15.0  # on SIGTERM, time to forward what was received (meetnet up waits 20 s)


@dataclass
class Stats:
    messages: int = 0
    readings: int = 0
    records: int = 0
    deadlettered: Counter[str] = field(default_factory=Counter)
    kafka_retries: int = 0
    ack_wait_s: float = 0.0  # time spent waiting for Kafka's acks


@dataclass(slots=True)
class _Msg:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ms: int


class Gateway:
    def __init__(self, settings: Settings, client_id: str | None = None) -> None:
        self.s = settings
        self.client_id = client_id or settings.gateway_client_id or _default_client_id()
        self.stats = Stats()
        self._pending: list[_Msg] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        self._client: BufferedClient | None = None
        self._helper: AsyncioHelper | None = None
        self._subscribed = False  # health: SUBACK received on the current connection
        self._kafka_error: str | None = None  # health: why the last Kafka send failed

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # --- MQTT side (runs in the event loop through AsyncioHelper) ---------------------------

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # dead-lettered as invalid_topic, never raised into paho
            topic = bytes(msg._topic).decode("utf-8", "replace")
        self._pending.append(
            _Msg(msg.mid, msg.qos, topic, bytes(msg.payload), int(time.time() * 1000))
        )
        self._wake.set()
        if len(self._pending) >= MAX_PENDING and self._helper is not None:
            # Kafka is slow or down: stop reading; the broker keeps the rest.
            self._helper.pause_reading()

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("MQTT connection refused", extra={"reason": str(rc)})
            return
        client.subscribe(self._topic_filter(), qos=1)
        self._connected.set()

    def _topic_filter(self) -> str:
        return f"$share/{self.s.mqtt_share_group}/{self.s.mqtt_topic_prefix}/#"

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        codes: list[ReasonCode],
        props: Properties,
    ) -> None:
        # Logged on SUBACK, when the broker routes to us. Until a share group's first
        # subscription exists, the broker drops what is published to it (PUBACK reason 16,
        # "no matching subscribers"): start gateways before devices, and wait for this line.
        if any(c.is_failure for c in codes):
            log.error(
                "subscription refused",
                extra={"topic": self._topic_filter(), "codes": [str(c) for c in codes]},
            )
            return
        self._subscribed = True
        log.info("subscribed", extra={"topic": self._topic_filter(), "client_id": self.client_id})

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        self._connected.clear()
        self._subscribed = False
        if not self._stop.is_set():
            log.warning("MQTT connection lost", extra={"reason": str(rc)})

    def _make_client(self) -> BufferedClient:
        client = BufferedClient(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            # MQTT 3.1.1 on purpose: Mosquitto 2.0.11 (Debian 12) has outgoing inflight-quota
            # bugs (fixed in 2.0.13) that can leave QoS 1 messages queued for a subscriber until
            # more traffic arrives; an MQTT v5 subscriber always gets a quota (its Receive
            # Maximum), a 3.1.1 subscriber gets none with `max_inflight_messages 0`. Flow
            # control is ours instead: MAX_PENDING / RESUME_PENDING below.
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.max_queued_messages_set(0)
        return client

    async def _keep_connected(self, client: BufferedClient) -> None:
        delay = 0.5
        while not self._stop.is_set():
            if client.socket() is None:
                try:
                    client.connect(
                        self.s.mqtt_host,
                        self.s.mqtt_port,
                        keepalive=30,
                    )
                    delay = 0.5
                except OSError as e:
                    log.warning(
                        "MQTT broker unreachable; retrying",
                        extra={"broker": self.s.mqtt_url, "error": str(e), "retry_s": delay},
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30)
                    continue
            await asyncio.sleep(0.5)

    # --- Kafka side -------------------------------------------------------------------------

    async def _forward(
        self, producer: AIOKafkaProducer, out: PartitionBatcher, batch: list[_Msg]
    ) -> None:
        """Produce a batch and wait for Kafka's acks; raise KafkaError if any send failed."""
        s = self.s
        futures = []
        await out.start_flush()
        n_readings = n_records = 0
        bad: Counter[str] = Counter()
        for m in batch:
            try:
                accepted = check_message(
                    m.topic,
                    m.payload,
                    prefix=s.mqtt_topic_prefix,
                    max_bytes=s.max_payload_bytes,
                    max_readings=s.max_readings_per_message,
                    received_ms=m.received_ms,
                )
            except WireError as e:
                bad[e.reason.value] += 1
                futures.append(
                    await producer.send(
                        s.kafka_deadletter_topic,
                        m.payload,
                        headers=dlq_headers(
                            e.reason, e.detail, f"mqtt:{m.topic}", "gateway", m.received_ms
                        ),
                    )
                )
                continue
            for sensor, n, value in accepted.parts:
                await out.add(sensor.encode(), value)
                n_readings += n
                n_records += 1
        futures.extend(await out.flush())
        t = time.perf_counter()
        await asyncio.gather(*futures)
        self.stats.ack_wait_s += time.perf_counter() - t
        self.stats.messages += len(batch)
        self.stats.readings += n_readings
        self.stats.records += n_records
        self.stats.deadlettered.update(bad)

    async def _flush_loop(self, producer: AIOKafkaProducer, client: BufferedClient) -> None:
        out = PartitionBatcher(producer, self.s.kafka_readings_topic)
        while True:
            if not self._pending:
                if self._stop.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[: self.s.gateway_max_batch]
            del self._pending[: len(batch)]
            delay = 0.2
            while True:
                try:
                    await self._forward(producer, out, batch)
                    self._kafka_error = None
                    break
                except KafkaError as e:
                    out.reset()
                    self._kafka_error = str(e) or type(e).__name__
                    # Kafka is unavailable: keep the batch (its MQTT messages stay un-acked,
                    # so the broker keeps them too) and retry. Re-sends may duplicate records;
                    # the processor's idempotent write absorbs that.
                    self.stats.kafka_retries += 1
                    log.warning("Kafka send failed; retrying", extra={"error": str(e)})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)
            for m in batch:
                if m.qos:
                    client.ack(m.mid, m.qos)
            stopping = self._stop.is_set()  # stopping: read nothing new, finish what we have
            if len(self._pending) < RESUME_PENDING and self._helper is not None and not stopping:
                self._helper.resume_reading()

    async def _report(self) -> None:
        last = (0, 0)
        while True:
            await asyncio.sleep(10)
            cur = (self.stats.messages, sum(self.stats.deadlettered.values()))
            if cur != last:
                log.info(
                    "gateway stats",
                    extra={
                        "messages": self.stats.messages,
                        "readings": self.stats.readings,
                        "kafka_records": self.stats.records,
                        "deadlettered": dict(self.stats.deadlettered),
                        "kafka_ack_wait_s": round(self.stats.ack_wait_s, 2),
                    },
                )
                last = cur

    def dump_state(self) -> None:
        """SIGUSR1: log where messages are (operators' and tests' view into a stuck gateway)."""
        import fcntl
        import struct
        import termios

        client = self._client
        sock = client.socket() if client is not None else None
        unread = -1
        if sock is not None:
            buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
            unread = struct.unpack("i", buf)[0]
        log.warning(
            "gateway state",
            extra={
                "pending": len(self._pending),
                "paused": self._helper._paused if self._helper else None,
                "connected": self._connected.is_set(),
                "socket_unread_bytes": unread,
                "buffered": client.has_buffered() if client is not None else None,
                "messages": self.stats.messages,
                "kafka_retries": self.stats.kafka_retries,
            },
        )

    def probe(self) -> health.Probe:
        """Liveness and readiness for meetnet/health.py."""
        return health.Probe(
            "gateway",
            alive=not self._stop.is_set(),
            checks={
                "mqtt": health.check(self._subscribed, "not connected and subscribed"),
                "kafka": health.check(self._kafka_error is None, self._kafka_error),
            },
            details={"client_id": self.client_id, "pending": len(self._pending)},
        )

    def _flusher_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Never limp on without forwarding: un-acked messages stay with the broker, and a
            # supervisor restarts us.
            log.error("flush loop crashed", exc_info=task.exception())
            self.stop()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.s.kafka_bootstrap,
            acks="all",
            linger_ms=2,
            # A batch must hold the largest record: wire.MAX_RECORD_BYTES plus overhead.
            max_batch_size=4 * MAX_RECORD_BYTES,
            max_request_size=16 * MAX_RECORD_BYTES,
            compression_type=None,
        )
        await producer.start()
        client = self._make_client()
        self._client = client
        helper = self._helper = AsyncioHelper(loop, client)
        tasks = [
            asyncio.create_task(self._keep_connected(client)),
            asyncio.create_task(self._report()),
        ]
        flusher = asyncio.create_task(self._flush_loop(producer, client))
        flusher.add_done_callback(self._flusher_done)
        try:
            await self._stop.wait()
            if flusher.done() and flusher.exception() is not None:
                raise RuntimeError("gateway flush loop failed") from flusher.exception()
            # Stop reading, forward and ack what was received, then disconnect. No unsubscribe:
            # the persistent session keeps the shared subscription, so the broker queues (and
            # later re-delivers) what arrives meanwhile; unsubscribing would make Mosquitto drop
            # messages published while no gateway of the group is subscribed.
            helper.pause_reading()
            self._wake.set()
            await asyncio.wait_for(flusher, timeout=STOP_FLUSH_S)
        finally:
            for t in tasks:
                t.cancel()
            flusher.cancel()
            with contextlib.suppress(Exception):
                client.disconnect()
            helper.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await producer.stop()


def _default_client_id() -> str:
    # Stable across restarts: the broker re-delivers un-acked messages to the same client id.
    return f"meetnet-gw-{socket.gethostname()}"


def main(settings: Settings) -> None:
    gw = Gateway(settings)

    async def _main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, gw.stop)
        loop.add_signal_handler(signal.SIGUSR1, gw.dump_state)
        log.info("gateway started", extra={"mqtt": settings.mqtt_url, "client_id": gw.client_id})
        async with health.serve(settings.health_host, settings.health_port, gw.probe):
            await gw.run()
        log.info("gateway stopped", extra={"messages": gw.stats.messages})

    asyncio.run(_main())

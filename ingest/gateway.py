"""The MQTT -> Kafka ingest gateway.

Subscribes with QoS 1 on a persistent MQTT 3.1.1 session to ``$share/<group>/<prefix>/#`` (so
several gateways split the load), validates each message at the edge (meetnet/wire.py), and
produces it to Kafka with ``acks="all"``, keyed by sensor id. Each MQTT message is acknowledged
(``manual_ack``) only after Kafka acknowledged everything it became: its readings record(s) or
its dead letter. A gateway killed at any point leaves its un-acked messages with the broker,
which re-delivers them; duplicates are removed by the idempotent write downstream.

Invalid input never raises: it becomes a dead-letter record holding the original bytes, with
the reason, the MQTT topic and the receive time in headers. Counts per reason are logged.

Valid messages are then checked against the registry (ingest/registry.py): unknown or retired
sensors and gateways, and sensors a gateway does not own, are dead-lettered too. A message
whose rejection the database has not confirmed yet is deferred: kept un-acked and decided
again a moment later, so a sensor registered a moment ago is never rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
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

from ingest.broker_auth import client_credentials
from ingest.mqtt import AsyncioHelper, BufferedClient
from ingest.produce import PartitionBatcher
from ingest.registry import Gate, Judgement
from meetnet import health
from meetnet.settings import Settings
from meetnet.wire import (
    MAX_RECORD_BYTES,
    Accepted,
    Reason,
    WireError,
    check_message,
    dlq_headers,
    gateway_payload,
)
from store.catalog import RegistryCache

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
    deferred: int = 0  # registry rejections postponed until the database confirms them


@dataclass(slots=True)
class _Msg:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ms: int
    mono: float  # time.monotonic() at receipt: registry answers must be newer to reject it


@dataclass(slots=True)
class _Plan:
    """What one flush sends: readings records per sensor, and dead letters."""

    msgs: list[_Msg] = field(default_factory=list)  # acknowledged once the plan is in Kafka
    parts: list[tuple[str, int, bytes]] = field(default_factory=list)
    # (value, reason, detail, topic, received_ms, n)
    letters: list[tuple[bytes, Reason, str, str, int]] = field(default_factory=list)


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
        self.registry = RegistryCache(settings, app="gateway-registry")
        self._gate = Gate(self.registry)
        self._deferred: list[_Msg] = []
        self._deferred_until = math.inf  # when to decide the deferred messages again

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
            _Msg(
                msg.mid,
                msg.qos,
                topic,
                bytes(msg.payload),
                int(time.time() * 1000),
                time.monotonic(),
            )
        )
        self._wake.set()
        if self._held() >= MAX_PENDING and self._helper is not None:
            # Kafka is slow or down: stop reading; the broker keeps the rest.
            self._helper.pause_reading()

    def _held(self) -> int:
        return len(self._pending) + len(self._deferred)

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            hint = (
                "set MEETNET_MQTT_USERNAME/MEETNET_MQTT_PASSWORD to the broker's service account"
                " (meetnet up generates one in <state_dir>/secrets)"
                if getattr(rc, "value", 0) in (134, 135, 4, 5)
                else ""
            )
            log.error("MQTT connection refused", extra={"reason": str(rc), "hint": hint})
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
        creds = client_credentials(self.s)
        if creds is not None:
            client.username_pw_set(*creds)
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

    async def _plan(self, batch: list[_Msg]) -> _Plan:
        """Wire checks and registry checks for a batch; deferred messages are set aside."""
        s = self.s
        plan = _Plan()
        valid: list[tuple[_Msg, Accepted]] = []
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
                plan.msgs.append(m)
                plan.letters.append((m.payload, e.reason, e.detail, m.topic, m.received_ms))
                continue
            valid.append((m, accepted))
        verdicts, retry = await self._gate.decide([(m.mono, acc) for m, acc in valid])
        for (m, acc), j in zip(valid, verdicts, strict=True):
            if j is None:
                self._deferred.append(m)
                self.stats.deferred += 1
                continue
            plan.msgs.append(m)
            self._apply(plan, m, acc, j)
        if retry < math.inf:
            self._deferred_until = min(self._deferred_until, max(retry, time.monotonic() + 0.05))
        return plan

    @staticmethod
    def _apply(plan: _Plan, m: _Msg, acc: Accepted, j: Judgement) -> None:
        if j.whole is not None:
            plan.letters.append((m.payload, j.whole[0], j.whole[1], m.topic, m.received_ms))
            return
        if not j.groups:
            plan.parts.extend(acc.parts)
            return
        plan.parts.extend(p for p in acc.parts if p[0] not in j.groups)
        # One dead letter per (message, reason): a gateway batch of just the rejected groups.
        by_reason: dict[Reason, list[str]] = {}
        for sensor, (reason, _) in j.groups.items():
            by_reason.setdefault(reason, []).append(sensor)
        for reason, sensors in by_reason.items():
            groups = [g for g in acc.groups or [] if g["sensor"] in sensors]
            detail = "; ".join(j.groups[x][1] for x in sensors)
            plan.letters.append((gateway_payload(groups), reason, detail, m.topic, m.received_ms))

    async def _forward(
        self, producer: AIOKafkaProducer, out: PartitionBatcher, plan: _Plan
    ) -> None:
        """Produce a plan and wait for Kafka's acks; raise KafkaError if any send failed."""
        s = self.s
        futures = []
        await out.start_flush()
        bad: Counter[str] = Counter()
        for value, reason, detail, topic, received_ms in plan.letters:
            bad[reason.value] += 1
            futures.append(
                await producer.send(
                    s.kafka_deadletter_topic,
                    value,
                    headers=dlq_headers(reason, detail, f"mqtt:{topic}", "gateway", received_ms),
                )
            )
        n_readings = 0
        for sensor, n, value in plan.parts:
            await out.add(sensor.encode(), value)
            n_readings += n
        futures.extend(await out.flush())
        t = time.perf_counter()
        await asyncio.gather(*futures)
        self.stats.ack_wait_s += time.perf_counter() - t
        self.stats.messages += len(plan.msgs)
        self.stats.readings += n_readings
        self.stats.records += len(plan.parts)
        self.stats.deadlettered.update(bad)

    def _take_batch(self) -> list[_Msg]:
        if self._deferred and time.monotonic() >= self._deferred_until:
            # Deferred messages are decided again, ahead of newer ones.
            self._pending[:0] = self._deferred
            self._deferred = []
            self._deferred_until = math.inf
        batch = self._pending[: self.s.gateway_max_batch]
        del self._pending[: len(batch)]
        return batch

    async def _flush_loop(self, producer: AIOKafkaProducer, client: BufferedClient) -> None:
        out = PartitionBatcher(producer, self.s.kafka_readings_topic)
        while True:
            batch = self._take_batch()
            if not batch:
                if self._stop.is_set():
                    return  # deferred messages stay un-acked: the broker re-delivers them
                self._wake.clear()
                wait = self._deferred_until - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), max(wait, 0.0) if wait < 1e9 else None
                    )
                continue
            plan = await self._plan(batch)
            delay = 0.2
            while True:
                try:
                    await self._forward(producer, out, plan)
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
            for m in plan.msgs:
                if m.qos:
                    client.ack(m.mid, m.qos)
            stopping = self._stop.is_set()  # stopping: read nothing new, finish what we have
            if self._held() < RESUME_PENDING and self._helper is not None and not stopping:
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
                        "deferred": self.stats.deferred,
                        "registry_lookups": self.registry.lookups,
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
                "deferred": len(self._deferred),
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
        # The registry first: without it no message can be judged (and none is lost meanwhile:
        # the broker keeps them until we subscribe).
        if not await self.registry.start(self._stop):
            return
        try:
            await self._run()
        finally:
            await self.registry.close()

    async def _run(self) -> None:
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

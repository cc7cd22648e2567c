"""``meetnet simulate``: publish the simulator model's readings over MQTT at a steady rate.

The simulated fleet publishes as field gateways, one per city (``sim-gw-<city>``, each owning
its city's sensors; registered in the registry by ``simulators/registry.py`` at start), with one
paho-mqtt client per gateway publishing QoS 1 messages to ``<prefix>/gateways/<gateway_id>``.
With ``MEETNET_MQTT_AUTH`` each client logs in with its gateway's credentials, which the
simulator issues itself at start (rotating the previous ones; the passwords live only in this
process). Sensors take turns: one sensor reports all its metrics every
``len(METRICS) / rate`` seconds, so each sensor reports every ``sensors * len(METRICS) / rate``
seconds. The schedule is anchored at the start (``time.monotonic``): a publisher that fell
behind catches up without drifting, and every reading's ``ts`` is its own slot's wall-clock
time in epoch milliseconds.

The number of unacknowledged messages is bounded (by this module and by paho's in-flight
window, never above what the broker's Receive Maximum allows), so memory stays bounded when
the broker is slow or away; publishing waits instead.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from meetnet.settings import Settings
from simulators.model import METRICS, MODES, Encoder, Fleet, make_fleet
from simulators.registry import issue_gateway_credentials, register_fleet
from store.db import DatabaseUnavailable, connect

log = logging.getLogger(__name__)

MAX_UNACKED = 1000  # QoS 1 messages published and not yet acknowledged, at most (memory bound)
CONNECT_TIMEOUT_S = 15.0  # includes the broker learning of freshly issued credentials
ACK_WAIT_S = 10.0  # at the end, how long to wait for outstanding PUBACKs
MIN_ROUND_S = 0.02  # publish in rounds at most 50 times a second (each slot keeps its own ts)
MAX_SLOTS_PER_ROUND = 2000  # sensor reports per round when catching up
STATS_EVERY_S = 30.0  # without a progress display, log a stats line this often
BEHIND_WARN_S = 5.0


class BrokerUnavailable(RuntimeError):
    """The MQTT broker cannot be reached or refused the connection."""


@dataclass(frozen=True)
class Login:
    """One MQTT connection: its credentials (None: anonymous) and the topics it publishes."""

    topics: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)


class Publisher:
    """paho-mqtt 2.x clients (MQTT v5, QoS 1), one per :class:`Login`, with a bounded number of
    unacknowledged messages over all of them. Counters are in messages; they are updated from
    paho's network threads."""

    def __init__(
        self, settings: Settings, logins: list[Login], *, max_unacked: int = MAX_UNACKED
    ) -> None:
        self.where = f"{settings.mqtt_host}:{settings.mqtt_port}"
        self._host = settings.mqtt_host
        self._port = settings.mqtt_port
        self._max = max_unacked
        self._limit = max_unacked
        self._cond = threading.Condition()
        self.sent = 0
        self.acked = 0
        self.refused = 0
        self._up: set[int] = set()  # indices of connected clients
        self._closing = False
        self._connect_error: str | None = None
        self._was_connected: set[int] = set()
        self._clients: list[mqtt.Client] = []
        self._route: dict[str, mqtt.Client] = {}
        tag = f"{os.getpid()}-{os.urandom(3).hex()}"
        for i, login in enumerate(logins):
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"meetnet-sim-{tag}-{i}",
                protocol=mqtt.MQTTv5,
                userdata=i,
            )
            if login.username is not None:
                client.username_pw_set(login.username, login.password)
            # The bound is kept here (see publish), not by paho's in-flight window: paho
            # rescans every queued message on each PUBACK, which makes a large window slow
            # (measured: about 2.7k msg/s with a window of 1000, 6-7k msg/s unbounded in paho
            # and bounded here). 0 = paho sends each message at once.
            client.max_inflight_messages_set(0)
            client.reconnect_delay_set(1, 10)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_publish = self._on_publish
            self._clients.append(client)
            self._route.update(dict.fromkeys(login.topics, client))

    @property
    def connected(self) -> bool:
        return len(self._up) == len(self._clients)

    # --- paho callbacks (network thread) ------------------------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            # paho retries by itself (reconnect_delay_set); freshly issued credentials reach
            # the broker within about a second, so "not authorized" may pass.
            with self._cond:
                self._connect_error = (
                    f"the MQTT broker at {self.where} refused the connection: {reason_code}"
                )
                self._cond.notify_all()
            return
        # The broker's Receive Maximum (65535 when absent): more in flight would be refused.
        receive_max = getattr(properties, "ReceiveMaximum", None) or 65535
        with self._cond:
            self._limit = max(1, min(self._limit, int(receive_max)))
            self._up.add(userdata)
            self._cond.notify_all()
        if userdata in self._was_connected:
            log.info("reconnected to the MQTT broker", extra={"broker": self.where})
        self._was_connected.add(userdata)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        with self._cond:
            self._up.discard(userdata)
            self._cond.notify_all()
        if not self._closing and userdata in self._was_connected:
            log.warning(
                "lost the connection to the MQTT broker; reconnecting",
                extra={"broker": self.where, "reason": str(reason_code)},
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, props: Any
    ) -> None:
        with self._cond:
            if reason_code.is_failure:
                self.refused += 1
                first = self.refused == 1
            else:
                self.acked += 1
                first = False
            self._cond.notify_all()
        if first:
            log.warning(
                "the broker refused a message (further refusals are only counted)",
                extra={"reason": str(reason_code)},
            )

    # --- main thread ----------------------------------------------------------------------
    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Connect and start paho's network thread; raise BrokerUnavailable with a clear
        message when the broker is down, unreachable or refuses us."""
        hint = "is it running? `meetnet up` starts a local one; MEETNET_MQTT_URL says where it is"
        for client in self._clients:
            try:
                client.connect(self._host, self._port, keepalive=30)
            except OSError as e:
                self.close()
                raise BrokerUnavailable(
                    f"cannot reach the MQTT broker at {self.where}: {e.strerror or e}; {hint}"
                ) from None
            client.loop_start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.connected and time.monotonic() < deadline:
                self._cond.wait(0.1)
            ok, error = self.connected, self._connect_error
        if not ok:
            self.close()
            if error:
                raise BrokerUnavailable(
                    f"{error} (for {timeout:.0f}s; with MEETNET_MQTT_AUTH the broker learns of "
                    "new credentials from `meetnet broker-auth`: is it running?)"
                )
            raise BrokerUnavailable(
                f"the MQTT broker at {self.where} did not answer within {timeout:.0f}s; {hint}"
            )

    @property
    def unacked(self) -> int:
        return max(0, self.sent - self.acked - self.refused)

    def publish(self, topic: str, payload: bytes, stop: Callable[[], bool]) -> bool:
        """Publish QoS 1 once fewer than the limit are unacknowledged. Returns False, without
        publishing, if ``stop()`` became true while waiting."""
        with self._cond:
            while self.sent - self.acked - self.refused >= self._limit:
                if stop():
                    return False
                self._cond.wait(0.1)
            self.sent += 1
        # Not connected: paho keeps the message and sends it after reconnecting.
        self._route[topic].publish(topic, payload, qos=1)
        return True

    def wait_acked(self, timeout: float, stop: Callable[[], bool]) -> bool:
        """Wait until every published message is acknowledged (or refused), at most
        ``timeout`` seconds or until ``stop()``; True if none is outstanding."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.sent - self.acked - self.refused > 0:
                left = deadline - time.monotonic()
                if left <= 0 or stop():
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        self._closing = True
        for client in self._clients:
            client.disconnect()
            client.loop_stop()


class _Signals:
    """Counts SIGINT/SIGTERM while installed: the first stops publishing, the second also
    abandons the wait for acknowledgements."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    @contextmanager
    def installed(self) -> Iterator[_Signals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


class _Rate:
    """Readings per second over the last few seconds."""

    def __init__(self, window_s: float = 3.0) -> None:
        self._window = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def update(self, now: float, count: int) -> float:
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0


def _check_args(sensors: int, rate: float, duration: float, mode: str) -> str | None:
    if sensors < 1:
        return "--sensors must be at least 1"
    if not (math.isfinite(rate) and rate > 0):
        return "--rate must be a positive number of readings per second"
    if not (math.isfinite(duration) and duration >= 0):
        return "--duration must be 0 (until stopped) or a positive number of seconds"
    if mode not in MODES:
        return f"--mode must be one of {', '.join(MODES)}"
    return None


def run(
    settings: Settings,
    *,
    sensors: int,
    rate: float,
    duration: float,
    mode: str,
    progress: bool,
) -> int:
    """Publish simulated readings; returns the process exit code (0 when every message was
    acknowledged, 1 when the broker is unreachable or messages were refused or left
    unacknowledged, 2 for bad arguments)."""
    problem = _check_args(sensors, rate, duration, mode)
    if problem:
        log.error(problem)
        return 2
    fleet = make_fleet(sensors)
    try:
        gateways, logins = _identity(settings, fleet, settings.mqtt_topic_prefix)
    except (psycopg.Error, DatabaseUnavailable) as e:
        log.error(f"cannot register the simulated sensors in the registry: {e}")
        return 1
    encoder = Encoder(fleet, settings.mqtt_topic_prefix, mode, gateways=gateways)
    per_msg = encoder.readings_per_message
    slot_s = len(METRICS) / rate  # one sensor reports all its metrics per slot
    if sensors * slot_s < 0.001:
        log.warning(
            "each sensor would report more than once per millisecond; readings with equal "
            "timestamps count once. Use more sensors or a lower rate.",
            extra={"sensors": sensors, "rate": rate},
        )

    pub = Publisher(settings, logins)
    try:
        pub.connect()
    except BrokerUnavailable as e:
        log.error(str(e))
        return 1
    log.info(
        "simulating",
        extra={
            "sensors": sensors,
            "rate": rate,
            "mode": mode,
            "broker": pub.where,
            "topics": f"{settings.mqtt_topic_prefix}/gateways/<id>",
            "gateways": len(logins),
            "authenticated": settings.mqtt_auth,
            "every_s": round(sensors * slot_s, 3),
        },
    )

    signals = _Signals()
    started = time.monotonic()
    with signals.installed():
        display = _display(duration) if progress else None
        try:
            _publish_loop(pub, encoder, sensors, slot_s, duration, signals, display)
        finally:
            elapsed = time.monotonic() - started
            if display is not None:
                display.update(
                    display.task_ids[0],
                    completed=elapsed,
                    stats=f"{pub.sent * per_msg:,} readings  unacked {pub.unacked:,}",
                )
                display.stop()
        if pub.unacked:
            log.info("waiting for acknowledgements", extra={"unacked": pub.unacked})
        all_acked = pub.wait_acked(ACK_WAIT_S, lambda: signals.count >= 2)
    pub.close()

    readings = pub.sent * per_msg
    log.info(
        "simulator done",
        extra={
            "readings": readings,
            "messages": pub.sent,
            "seconds": round(elapsed, 1),
            "readings_per_s": round(readings / elapsed) if elapsed > 0 else 0,
            "unacked": pub.unacked,
            "refused": pub.refused,
        },
    )
    if not all_acked:
        log.error(
            "messages were left unacknowledged by the broker",
            extra={"unacked": pub.unacked, "waited_s": ACK_WAIT_S},
        )
    if pub.refused:
        log.error("the broker refused messages", extra={"refused": pub.refused})
    return 0 if all_acked and not pub.refused else 1


def _identity(settings: Settings, fleet: Fleet, prefix: str) -> tuple[list[str], list[Login]]:
    """Register the fleet; one login per gateway (with fresh credentials under mqtt_auth)."""
    with connect(settings, app="simulator") as conn:
        gateways = register_fleet(conn, fleet)
        passwords = issue_gateway_credentials(conn, gateways) if settings.mqtt_auth else {}
    logins = [
        Login(
            (f"{prefix}/gateways/{g}",),
            g if g in passwords else None,
            passwords.get(g),
        )
        for g in sorted(set(gateways))
    ]
    return gateways, logins


def _display(duration: float) -> Progress:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]simulating"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        refresh_per_second=4,
    )
    progress.add_task("sim", total=duration if duration > 0 else None, stats="connecting")
    progress.start()
    return progress


def _publish_loop(
    pub: Publisher,
    encoder: Encoder,
    sensors: int,
    slot_s: float,
    duration: float,
    signals: _Signals,
    display: Progress | None,
) -> None:
    per_msg = encoder.readings_per_message
    total_slots = math.ceil(duration / slot_s - 1e-9) if duration > 0 else None
    slot_ms = slot_s * 1000.0
    t0 = time.monotonic()
    wall0_ms = time.time_ns() // 1_000_000
    done = 0  # slots published
    rate = _Rate()
    next_report = t0 + (0.25 if display is not None else STATS_EVERY_S)
    warned_behind = False

    # Past the end, stop even if behind; the small grace lets an on-time run finish its
    # last round (total_slots stops it first).
    end = t0 + duration + 0.1 if duration > 0 else math.inf

    def stop() -> bool:
        return signals.count > 0 or time.monotonic() >= end

    while not stop():
        round_start = time.monotonic()
        due = int((round_start - t0) / slot_s) + 1
        if total_slots is not None:
            due = min(due, total_slots)
        if due > done:
            n = min(due - done, MAX_SLOTS_PER_ROUND)
            slots = np.arange(done, done + n, dtype=np.int64)
            ts = wall0_ms + np.floor(slots * slot_ms).astype(np.int64)
            for topic, payload in encoder.tick(slots % sensors, ts):
                if stop() or not pub.publish(topic, payload, stop):
                    return
            done += n
        now = time.monotonic()
        behind = now - (t0 + done * slot_s)
        if behind > BEHIND_WARN_S and not warned_behind:
            warned_behind = True
            log.warning(
                "the simulator cannot keep up with the requested rate; readings are late",
                extra={"behind_s": round(behind, 1)},
            )
        if now >= next_report:
            published = pub.sent * per_msg
            current = rate.update(now, published)
            if display is not None:
                stats = f"{published:,} readings  {current:,.0f}/s  unacked {pub.unacked:,}"
                if not pub.connected:
                    stats += "  [red]disconnected, retrying"
                display.update(display.task_ids[0], completed=now - t0, stats=stats)
                next_report = now + 0.25
            else:
                log.info(
                    "publishing",
                    extra={
                        "readings": published,
                        "readings_per_s": round(current),
                        "unacked": pub.unacked,
                    },
                )
                next_report = now + STATS_EVERY_S
        if total_slots is not None and done >= total_slots:
            return
        if due > done:
            continue  # still catching up
        wake = max(t0 + done * slot_s, round_start + MIN_ROUND_S)
        time.sleep(min(max(wake - time.monotonic(), 0.0), 0.1))

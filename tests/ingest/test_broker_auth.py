"""Device identity on a real Mosquitto with authentication: credentials from the registry become
MQTT logins, the ACL confines each device to its own topic, and issuing, rotating and revoking
credentials takes effect in the running broker within seconds (the broker is never restarted)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from ingest.broker_auth import ACL_FILE, PASSWORD_FILE, local_password_path
from meetnet import procs, services
from meetnet.settings import Settings
from meetnet.wire import Reason
from store import credentials
from tests.support import (
    count_readings,
    read_deadletters,
    register_sensors,
    start_worker,
    wait_subscribed,
    wait_until,
)

pytestmark = pytest.mark.integration

PREFIX = "auth/v1"
NOT_AUTHORIZED = 135  # MQTT v5 reason code, in CONNACK and PUBACK
ISSUED: list[str] = []  # every password handed out in this module: none may leak


@pytest.fixture(scope="module")
def secured(
    brokers: Settings, migrated_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, procs.subprocess.Popen[bytes]]]:
    """A Mosquitto of its own with MEETNET_MQTT_AUTH, and `meetnet broker-auth` following the
    test database, as `meetnet up` runs them."""
    state = tmp_path_factory.mktemp("auth-state")
    s = brokers.model_copy(
        update={
            "state_dir": state,
            "mqtt_url": f"mqtt://127.0.0.1:{procs.free_port()}",
            "mqtt_auth": True,
            "mqtt_topic_prefix": PREFIX,
            "manage_local_services": False,
            "registry_poll_s": 2.0,
        }
    )
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("TRUNCATE device_credentials")
    mosquitto = services.start_mosquitto(s)
    sync = start_worker("broker-auth", s, state / "logs")
    try:
        wait_until(
            lambda: "broker auth sync started" in _read(state / "logs" / "broker-auth.log"),
            30,
            "broker-auth to start",
        )
        yield s, mosquitto
    finally:
        procs.stop(sync)
        procs.stop(mosquitto)
    # The password file holds hashes only, and no password shows up anywhere.
    text = (s.auth_dir / PASSWORD_FILE).read_text()
    for line in text.splitlines():
        if not line.startswith("#"):
            assert line.split(":", 1)[1].startswith("$7$"), line
    service_pw = local_password_path(s).read_text().strip()
    assert local_password_path(s).stat().st_mode & 0o777 == 0o600
    secrets = [*ISSUED, service_pw]
    files = [p for p in state.rglob("*") if p.is_file() and p != local_password_path(s)]
    for path in files:
        body = path.read_bytes()
        for pw in secrets:
            assert pw.encode() not in body, f"a password appears in {path}"


@pytest.fixture
def auth_stack(
    secured: tuple[Settings, procs.subprocess.Popen[bytes]], db: psycopg.Connection
) -> Settings:
    s, _ = secured
    tag = uuid.uuid4().hex[:8]
    s = s.model_copy(
        update={
            "kafka_readings_topic": f"readings-{tag}",
            "kafka_deadletter_topic": f"deadletter-{tag}",
            "processor_group": f"processor-{tag}",
            "mqtt_share_group": f"gw-{tag}",
        }
    )
    asyncio.run(services.ensure_topics(s))
    return s


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _issue(db: psycopg.Connection, **device: str) -> str:
    pw = credentials.issue(db, **device)
    ISSUED.append(pw)
    return pw


class Device:
    """An MQTT v5 client that records its CONNACK, disconnects and PUBACK reason codes."""

    def __init__(self, s: Settings, username: str | None, password: str | None) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"dev-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.connacks: list[int] = []
        self.disconnects = 0
        self.pubacks: dict[int, int] = {}
        self.subacks: list[int] = []
        self.received: list[str] = []
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.received.append(m.topic)
        self.client.connect(s.mqtt_host, s.mqtt_port)
        self.client.loop_start()

    def _on_connect(self, c: object, u: object, f: object, rc: mqtt.ReasonCode, p: object) -> None:
        with self._cond:
            self.connacks.append(rc.value)
            self._cond.notify_all()

    def _on_disconnect(self, c: object, u: object, f: object, rc: object, p: object) -> None:
        with self._cond:
            self.disconnects += 1
            self._cond.notify_all()

    def _on_publish(self, c: object, u: object, mid: int, rc: mqtt.ReasonCode, p: object) -> None:
        with self._cond:
            self.pubacks[mid] = rc.value
            self._cond.notify_all()

    def _on_subscribe(self, c: object, u: object, mid: int, rcs: list, p: object) -> None:
        with self._cond:
            self.subacks.extend(rc.value for rc in rcs)
            self._cond.notify_all()

    def wait(self, pred: object, timeout: float = 10) -> None:
        with self._cond:
            assert self._cond.wait_for(pred, timeout), "timed out"  # type: ignore[arg-type]

    def first_connack(self) -> int:
        self.wait(lambda: self.connacks)
        return self.connacks[0]

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS 1; the PUBACK reason code (0 success, 16 no subscribers, 135 not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        self.wait(lambda: info.mid in self.pubacks)
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _connack(s: Settings, username: str | None, password: str | None) -> int:
    d = Device(s, username, password)
    try:
        return d.first_connack()
    finally:
        d.close()


def _login_within(s: Settings, username: str, password: str, timeout: float = 10) -> Device:
    """Connect as soon as the broker accepts the login (the sync takes about a second)."""
    deadline = time.monotonic() + timeout
    while True:
        d = Device(s, username, password)
        if d.first_connack() == 0:
            return d
        d.close()
        assert time.monotonic() < deadline, f"{username} could not log in within {timeout}s"
        time.sleep(0.2)


def _reading(ts: int, value: float = 1.0, metric: str = "pm25") -> bytes:
    return b'{"metric":"%s","ts":%d,"value":%r}' % (metric.encode(), ts, value)


def _workers(s: Settings, tmp_path: Path) -> list[procs.subprocess.Popen[bytes]]:
    gw = start_worker("gateway", s, tmp_path, {"MEETNET_GATEWAY_CLIENT_ID": s.mqtt_share_group})
    pr = start_worker("processor", s, tmp_path)
    wait_subscribed(tmp_path / "gateway.log")
    return [gw, pr]


def _assert_no_secrets(*dirs: Path) -> None:
    for d in dirs:
        for path in (p for p in d.rglob("*") if p.is_file()):
            body = path.read_bytes()
            assert not [pw for pw in ISSUED if pw.encode() in body], f"a password in {path}"


def _stored(db: psycopg.Connection) -> set[str]:
    rows = db.execute(
        "SELECT DISTINCT s.sensor_id FROM readings r JOIN series s USING (series_id)"
    ).fetchall()
    return {r[0] for r in rows}


def test_a_device_publishes_as_itself_only(
    auth_stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    s = auth_stack
    register_sensors(db, ["dev-a", "dev-b"])
    pw_a = _issue(db, sensor_id="dev-a")
    pw_b = _issue(db, sensor_id="dev-b")
    workers = _workers(s, tmp_path)
    try:
        # dev-b tries to listen in on everybody (Mosquitto grants the SUBSCRIBE, then checks
        # read access per message: it must get nothing).
        b = _login_within(s, "dev-b", pw_b)
        b.client.subscribe(f"{PREFIX}/#", qos=1)
        b.client.subscribe("#", qos=1)
        b.wait(lambda: len(b.subacks) == 2)
        a = _login_within(s, "dev-a", pw_a)
        now = int(time.time() * 1000)
        try:
            assert a.publish(f"{PREFIX}/sensors/dev-a", _reading(now)) == 0
            # Another device's topic, a gateway's topic, outside the prefix: not authorized,
            # and nothing of it reaches the gateway.
            assert a.publish(f"{PREFIX}/sensors/dev-b", _reading(now)) == NOT_AUTHORIZED
            assert a.publish(f"{PREFIX}/gateways/dev-a", _reading(now)) == NOT_AUTHORIZED
            assert a.publish("elsewhere/sensors/dev-a", _reading(now)) == NOT_AUTHORIZED
        finally:
            a.close()
        assert _connack(s, "dev-a", "wrong-password") == NOT_AUTHORIZED
        assert _connack(s, "dev-a", None) == NOT_AUTHORIZED
        assert _connack(s, None, None) == NOT_AUTHORIZED
        wait_until(lambda: count_readings(db) == 1, 30, "dev-a's reading")
        time.sleep(1.0)  # anything else on its way would arrive now
        assert _stored(db) == {"dev-a"}
        assert count_readings(db) == 1
        assert b.received == [], "a device read another device's messages"
        b.close()
        assert read_deadletters(s, expect=0, timeout=1) == []
    finally:
        for w in workers:
            procs.stop(w)
    _assert_no_secrets(tmp_path)


def test_a_gateway_publishes_only_on_its_topic_and_only_for_its_own_sensors(
    auth_stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    s = auth_stack
    register_sensors(db, ["own-1", "own-2"], gateway="gw-one")
    register_sensors(db, ["other-1"], gateway="gw-two")
    pw = _issue(db, gateway_id="gw-one")
    workers = _workers(s, tmp_path)
    now = int(time.time() * 1000)
    batch = (
        b'{"sensors":[{"sensor":"own-1","readings":[%s]},{"sensor":"other-1","readings":[%s]},'
        b'{"sensor":"own-2","readings":[%s]}]}' % (_reading(now), _reading(now), _reading(now))
    )
    try:
        g = _login_within(s, "gw-one", pw)
        try:
            assert g.publish(f"{PREFIX}/gateways/gw-two", batch) == NOT_AUTHORIZED
            assert g.publish(f"{PREFIX}/sensors/own-1", _reading(now)) == NOT_AUTHORIZED
            assert g.publish(f"{PREFIX}/gateways/gw-one", batch) == 0
        finally:
            g.close()
        wait_until(lambda: count_readings(db) == 2, 30, "the gateway's own sensors' readings")
        letters = read_deadletters(s, expect=1)
    finally:
        for w in workers:
            procs.stop(w)
    assert _stored(db) == {"own-1", "own-2"}
    assert [d.reason for d in letters] == [Reason.GATEWAY_NOT_OWNER.value]
    assert letters[0].headers["meetnet.source"] == f"mqtt:{PREFIX}/gateways/gw-one"
    assert b'"sensor":"other-1"' in letters[0].value and b"own-1" not in letters[0].value
    _assert_no_secrets(tmp_path)


def test_rotated_and_revoked_credentials_stop_working_in_the_running_broker(
    auth_stack: Settings,
    db: psycopg.Connection,
    secured: tuple[Settings, procs.subprocess.Popen[bytes]],
) -> None:
    s = auth_stack
    _, mosquitto = secured
    pid_before = mosquitto.pid
    register_sensors(db, ["rot-1"])
    old = _issue(db, sensor_id="rot-1")
    first = _login_within(s, "rot-1", old)
    topic = f"{PREFIX}/sensors/rot-1"
    try:
        assert first.publish(topic, _reading(1)) in (0, 16)  # 16: no gateway subscribed

        # Rotate: the connection opened with the old password is dropped within seconds, the
        # old password is refused from then on, the new one works.
        t = time.monotonic()
        new = _issue(db, sensor_id="rot-1")
        first.wait(lambda: first.disconnects >= 1, timeout=10)
        assert time.monotonic() - t < 5
        assert _connack(s, "rot-1", old) == NOT_AUTHORIZED
        second = _login_within(s, "rot-1", new)
        try:
            assert second.publish(topic, _reading(2)) in (0, 16)
            # Revoke: refused within seconds, also for the client that is connected.
            t = time.monotonic()
            assert credentials.revoke(db, "rot-1") == 1
            second.wait(lambda: second.disconnects >= 1, timeout=10)
            assert time.monotonic() - t < 5
            assert _connack(s, "rot-1", new) == NOT_AUTHORIZED
            assert _connack(s, "rot-1", old) == NOT_AUTHORIZED
        finally:
            second.close()
    finally:
        first.close()
    # Never restarted: the same process all along.
    assert mosquitto.poll() is None and mosquitto.pid == pid_before
    assert int(s.broker_pid_file.read_text()) == pid_before
    # The files now hold only the service account.
    acl = (s.auth_dir / ACL_FILE).read_text()
    assert "rot-1" not in acl and "rot-1" not in (s.auth_dir / PASSWORD_FILE).read_text()
    assert f"user {s.mqtt_username}\ntopic read {PREFIX}/#" in acl
    assert os.stat(s.auth_dir / PASSWORD_FILE).st_mode & 0o077 == 0o040  # group-readable only

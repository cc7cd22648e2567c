"""BufferedClient: paho's many small socket reads served from one large recv().

A ``socket.socketpair()`` stands in for the broker connection: the test writes raw MQTT PUBLISH
packets into one end and the client reads the other. The only client state set by hand is
``_sock`` (what ``connect()`` would set): paho's read path needs nothing else to deliver a QoS 0
PUBLISH to ``on_message`` (no CONNACK, no connection state).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from ingest import mqtt as ingest_mqtt
from ingest.mqtt import AsyncioHelper, BufferedClient

PROTOCOLS = [
    pytest.param(mqtt.MQTTv311, id="v3.1.1"),
    pytest.param(mqtt.MQTTv5, id="v5"),
]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: str, payload: bytes, protocol: int) -> bytes:
    """A QoS 0 PUBLISH packet: fixed header 0x30, remaining length, topic, [properties], payload."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name
    if protocol == mqtt.MQTTv5:
        body += varint(0)  # no properties
    body += payload
    return b"\x30" + varint(len(body)) + body


MESSAGES = [
    ("meetnet/v1/sensors/a", b'{"metric":"pm25","ts":1,"value":1}'),
    ("meetnet/v1/sensors/b", b"x" * 200),  # remaining length needs 2 bytes
    ("meetnet/v1/sensors/c", b""),
    ("meetnet/v1/gateways/g", bytes(range(256)) * 80),  # 20 KiB: 3-byte remaining length
    ("meetnet/v1/sensors/d", b"line\nbreak\r\n\x00"),
]


class Harness:
    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.client = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
        self.received: list[tuple[str, bytes]] = []
        self.client.on_message = lambda _c, _u, msg: self.received.append((msg.topic, msg.payload))
        self.client_end, self.broker = socket.socketpair()
        self.client_end.setblocking(False)
        self.client._sock = self.client_end  # what connect() would have set

    def send(self, data: bytes) -> None:
        self.broker.sendall(data)

    def packets(self, messages: list[tuple[str, bytes]]) -> bytes:
        return b"".join(publish(t, p, self.protocol) for t, p in messages)

    def drain(self) -> None:
        """What the gateway does on a readable socket: read, then everything already buffered."""
        assert self.client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        while self.client.has_buffered():
            assert self.client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        assert not self.client.has_buffered()

    def close(self) -> None:
        self.client._sock_close()
        self.broker.close()


@pytest.fixture(params=PROTOCOLS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = Harness(request.param)
    yield harness
    harness.close()


def test_packets_written_at_once_are_all_delivered_in_order(h: Harness) -> None:
    h.send(h.packets(MESSAGES))
    h.drain()
    assert h.received == MESSAGES


def test_one_loop_read_delivers_every_buffered_packet(h: Harness) -> None:
    h.send(h.packets(MESSAGES))
    assert h.client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    assert h.received == MESSAGES
    assert not h.client.has_buffered()


def test_small_reads_are_served_from_one_large_recv(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = mqtt.Client._sock_recv

    def counting(self: mqtt.Client, bufsize: int) -> bytes:
        calls.append(bufsize)
        return real(self, bufsize)

    monkeypatch.setattr(mqtt.Client, "_sock_recv", counting)
    h.send(h.packets(MESSAGES))
    h.drain()
    assert h.received == MESSAGES
    assert calls == [ingest_mqtt._RECV_CHUNK]


def test_one_readable_event_delivers_every_buffered_message(h: Harness) -> None:
    # The event loop signals a readable socket once; packets already in the user-space buffer
    # will not be signalled again, so one callback must deliver them all.
    loop = asyncio.new_event_loop()
    try:
        helper = AsyncioHelper(loop, h.client)
        h.send(h.packets(MESSAGES))
        helper._read()
        assert h.received == MESSAGES
        assert not h.client.has_buffered()
    finally:
        loop.close()


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(1, id="after-command-byte"),
        pytest.param(2, id="inside-remaining-length"),
        pytest.param(3, id="after-remaining-length"),
        pytest.param(8, id="inside-topic"),
        pytest.param(150, id="inside-payload"),
        pytest.param(-1, id="last-byte-missing"),
    ],
)
def test_packet_split_across_two_writes_is_delivered_once_complete(h: Harness, cut: int) -> None:
    first, split, last = MESSAGES[0], MESSAGES[1], MESSAGES[2]
    packet = publish(*split, h.protocol)
    assert packet[1] & 0x80, "the split packet must have a 2-byte remaining length"
    h.send(h.packets([first]) + packet[:cut])
    h.drain()
    assert h.received == [first]
    h.send(packet[cut:] + h.packets([last]))
    h.drain()
    assert h.received == [first, split, last]


def test_message_larger_than_the_read_chunk_is_delivered_whole(h: Harness) -> None:
    big = ("meetnet/v1/gateways/big", bytes(range(251)) * 4000)  # ~1 MB, 4 recv chunks
    data = h.packets([MESSAGES[0], big, MESSAGES[1]])
    assert len(data) > 3 * ingest_mqtt._RECV_CHUNK
    h.broker.setblocking(False)
    sent = 0
    while sent < len(data):
        with contextlib.suppress(BlockingIOError):
            sent += h.broker.send(data[sent:])
        h.drain()
    h.drain()
    assert h.received == [MESSAGES[0], big, MESSAGES[1]]


def test_has_buffered_reports_packets_left_in_the_buffer(h: Harness) -> None:
    h.send(h.packets(MESSAGES[:2]))
    assert not h.client.has_buffered()
    assert h.client._packet_read() == mqtt.MQTT_ERR_SUCCESS  # paho reads exactly one packet
    assert h.received == MESSAGES[:1]
    assert h.client.has_buffered()
    assert h.client._packet_read() == mqtt.MQTT_ERR_SUCCESS
    assert h.received == MESSAGES[:2]
    assert not h.client.has_buffered()


def test_closing_the_socket_discards_the_buffer(h: Harness) -> None:
    h.send(h.packets(MESSAGES[:2]))
    h.client._packet_read()
    assert h.client.has_buffered()
    h.client._sock_close()
    assert not h.client.has_buffered()
    assert h.client._rbuf == b""
    assert h.client._sock is None
    assert h.client_end.fileno() == -1


def test_peer_closing_after_messages_delivers_them_then_reports_connection_lost(
    h: Harness,
) -> None:
    h.send(h.packets(MESSAGES[:2]))
    h.broker.shutdown(socket.SHUT_WR)
    h.drain()
    assert h.received == MESSAGES[:2]
    assert h.client.loop_read() == mqtt.MQTT_ERR_CONN_LOST
    assert h.client._sock is None
    assert not h.client.has_buffered()


def test_nothing_to_read_is_not_an_error(h: Harness) -> None:
    assert h.client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    assert h.received == []
    assert not h.client.has_buffered()

"""A minimal MQTT 3.1.1 QoS 1 publisher for load generation (``meetnet bench``).

The bench should measure the platform, not its load generator. A paho publisher spends more
CPU per message than the whole platform does (measured: two paho publisher processes used more
than half of the machine in ``bench --mode single``), because paho builds, tracks and
acknowledges every message in Python objects. This one writes prebuilt PUBLISH packets in bulk
with ``sendall`` and counts the 4-byte PUBACKs in a reader thread. It is deliberately
incomplete (no QoS 2, no retransmission, no keep-alive): a load generator, not a client.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

_PUBACK = 0x40


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


class LeanPublisher:
    def __init__(self, host: str, port: int, client_id: str, flush_every: int = 64) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        # CONNECT: protocol "MQTT" level 4, clean session, keep-alive 0 (disabled).
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack(">H", len(cid)) + cid
        self.sock.sendall(_packet(0x10, body))
        connack = self._recv_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"MQTT broker refused the connection: {connack!r}")
        self.sock.settimeout(None)
        self.sent = 0
        self.acked = 0
        self._mid = 0
        self._buf: list[bytes] = []
        self._flush_every = flush_every
        self._cond = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("MQTT broker closed the connection")
            data += chunk
        return data

    def _read_acks(self) -> None:
        pending = b""
        while not self._closed:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            n = len(pending) // 4
            if n:
                packets, pending = pending[: n * 4], pending[n * 4 :]
                if packets[::4].count(_PUBACK) != n:
                    raise ConnectionError("unexpected packet from the broker (not a PUBACK)")
                with self._cond:
                    self.acked += n
                    self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one QoS 1 PUBLISH; written in bulk every ``flush_every`` messages."""
        self._mid = self._mid % 65535 + 1
        t = topic.encode()
        body = struct.pack(">H", len(t)) + t + struct.pack(">H", self._mid) + payload
        self._buf.append(_packet(0x32, body))
        self.sent += 1
        if len(self._buf) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self.sock.sendall(b"".join(self._buf))
            self._buf.clear()

    def wait_unacked_below(self, limit: int, timeout: float = 60) -> None:
        self.flush()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.sent - self.acked > limit:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise TimeoutError(f"{self.sent - self.acked} publishes not acknowledged")
                self._cond.wait(min(left, 0.05))

    def close(self) -> None:
        self.flush()
        self._closed = True
        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

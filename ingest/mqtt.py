"""paho-mqtt on an asyncio event loop, with buffered reads.

paho reads every packet with two or three ``recv()`` calls of one or a few bytes each, which
caps a subscriber at a few thousand messages per second. :class:`BufferedClient` serves those
small reads from one large ``recv()``; :class:`AsyncioHelper` drives the client from the event
loop's reader/writer callbacks (the pattern of aiomqtt and paho's own asyncio example), so MQTT
and aiokafka share one thread and no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)
_RECV_CHUNK = 256 * 1024


class BufferedClient(mqtt.Client):
    """A paho client whose socket reads go through a user-space buffer.

    Relies on paho 2.x's ``_sock_recv(bufsize)`` hook (pinned in pyproject.toml; covered by
    tests/ingest/test_mqtt.py).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(_RECV_CHUNK)  # raises BlockingIOError when nothing waits
            if not data:
                return b""  # peer closed
            self._rbuf, self._rpos = data, 0
        end = self._rpos + bufsize
        chunk = self._rbuf[self._rpos : end]
        self._rpos += len(chunk)
        return chunk

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        # Drain every complete packet already buffered: the socket will not signal them again.
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self.has_buffered() and self._sock is not None:
            rc = super().loop_read(max_packets)
        return rc

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # paho walks its topic-filter trie for every message even when no per-topic callback
        # was registered (7% of the gateway's time); go straight to on_message then.
        if self._on_message_filtered._root._children:
            super()._handle_on_message(message)
        elif self.on_message is not None:
            self.on_message(self, self._userdata, message)

    def has_buffered(self) -> bool:
        return self._rpos < len(self._rbuf)

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()


class AsyncioHelper:
    """Connects a paho client's socket events to an asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: BufferedClient) -> None:
        self.loop = loop
        self.client = client
        self._misc: asyncio.Task[None] | None = None
        self._paused = False
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if not self._paused:
            self.loop.add_reader(sock, self._read)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        if self._misc is None or self._misc.done():
            self._misc = self.loop.create_task(self._misc_loop())

    def _read(self) -> None:
        self.client.loop_read()

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.add_writer(sock, self.client.loop_write)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    async def _misc_loop(self) -> None:
        # Keep-alive pings and retries; stops when the connection goes away.
        while self.client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1)

    def pause_reading(self) -> None:
        """Stop taking data from the socket (backpressure: TCP makes the broker hold on)."""
        sock = self.client.socket()
        if not self._paused and sock is not None:
            self.loop.remove_reader(sock)
        self._paused = True

    def resume_reading(self) -> None:
        sock = self.client.socket()
        if self._paused and sock is not None:
            self.loop.add_reader(sock, self._read)
        self._paused = False

    def close(self) -> None:
        if self._misc is not None:
            self._misc.cancel()

"""HTTP liveness and readiness of the workers (gateway, processor), for Kubernetes probes.

The workers have no HTTP port of their own. With ``MEETNET_HEALTH_PORT`` > 0 a worker also
serves, on ``MEETNET_HEALTH_HOST``, from its own event loop (no threads, no extra dependency):

* ``GET /live``: 200 while the event loop answers and the worker's tasks run (a worker whose
  loop is blocked does not answer at all; the probe's timeout fails it). It never looks at the
  engines: restarting a worker because Kafka or the database is down would not help.
* ``GET /ready``: 200 when the worker's own checks pass (gateway: connected and subscribed to
  MQTT, its last Kafka send succeeded; processor: member of its consumer group with an
  assignment, possibly empty, and the database accepted its last write), else 503 naming the
  failing check.

Both answer with a JSON body: ``{"status": "ok"|"unavailable", "component": ..., "checks":
{name: "ok" | "error: ..."}, ...}`` plus the worker's details (e.g. assigned partitions).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 2.0
MAX_REQUEST_LINE = 4096


@dataclass
class Probe:
    """What a worker reports about itself."""

    component: str
    alive: bool = True
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" | "error: ..."
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.alive and all(v == "ok" for v in self.checks.values())

    def body(self, ok: bool) -> dict[str, Any]:
        return {
            "status": "ok" if ok else "unavailable",
            "component": self.component,
            "alive": self.alive,
            "checks": self.checks,
            **self.details,
        }


def check(ok: bool, error: str | None) -> str:
    """A check's value: "ok", or "error: <why>"."""
    return "ok" if ok else f"error: {error or 'not yet'}"


def _response(status: int, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body, default=str).encode()
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


def answer(request_line: bytes, probe: Callable[[], Probe]) -> bytes:
    """The HTTP response to one request line (pure: tested without sockets)."""
    parts = request_line.decode("latin-1").split()
    if len(parts) < 2:
        return _response(404, {"detail": "malformed request"})
    method, path = parts[0], parts[1].split("?", 1)[0]
    if path not in ("/live", "/ready"):
        return _response(404, {"detail": f"unknown path {path!r}; use /live or /ready"})
    if method not in ("GET", "HEAD"):
        return _response(405, {"detail": "only GET"})
    p = probe()
    ok = p.alive if path == "/live" else p.ready
    return _response(200 if ok else 503, p.body(ok))


@contextlib.asynccontextmanager
async def serve(host: str, port: int, probe: Callable[[], Probe]) -> AsyncIterator[int | None]:
    """Serve /live and /ready while the block runs (nothing when ``port`` is 0). Yields the
    port actually bound, or None."""
    if port <= 0:
        yield None
        return

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
            if len(line) > MAX_REQUEST_LINE:
                line = b""
            # Headers are read and ignored: probes send a handful.
            while (h := await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                del h
            writer.write(answer(line, probe))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a broken probe must never take the worker down
            log.exception("health request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    bound = int(server.sockets[0].getsockname()[1])
    log.info("health endpoint listening", extra={"address": f"{host}:{bound}"})
    try:
        yield bound
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)

"""The workers' health endpoint: what /live and /ready answer, over a real socket."""

from __future__ import annotations

import asyncio
import json

from meetnet import health, procs


def _split(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _probe(alive: bool = True, **checks: str) -> health.Probe:
    return health.Probe("processor", alive=alive, checks=checks, details={"partitions": [1]})


def test_ready_needs_every_check_ok_and_names_the_failing_one() -> None:
    status, body = _split(health.answer(b"GET /ready HTTP/1.1", lambda: _probe(db="ok")))
    assert status == 200
    assert body == {
        "status": "ok",
        "component": "processor",
        "alive": True,
        "checks": {"db": "ok"},
        "partitions": [1],
    }
    failing = _probe(db="ok", kafka=health.check(False, "broker down"))
    status, body = _split(health.answer(b"GET /ready HTTP/1.1", lambda: failing))
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["kafka"] == "error: broker down"


def test_live_ignores_the_engines_but_not_a_stopped_worker() -> None:
    broken_engines = _probe(db=health.check(False, None))
    assert _split(health.answer(b"GET /live HTTP/1.1", lambda: broken_engines))[0] == 200
    stopped = _probe(alive=False, db="ok")
    assert _split(health.answer(b"GET /live HTTP/1.1", lambda: stopped))[0] == 503
    assert _split(health.answer(b"GET /ready HTTP/1.1", lambda: stopped))[0] == 503


def test_unknown_paths_methods_and_garbage_get_a_clear_error() -> None:
    status, body = _split(health.answer(b"GET /metrics HTTP/1.1", _probe))
    assert status == 404
    assert "/live or /ready" in body["detail"]
    assert _split(health.answer(b"POST /ready HTTP/1.1", _probe))[0] == 405
    assert _split(health.answer(b"\xff", _probe))[0] == 404
    # A query string does not change the answer.
    assert _split(health.answer(b"GET /live?x=1 HTTP/1.1", _probe))[0] == 200


def test_served_over_http_on_the_event_loop() -> None:
    state = {"db": "ok"}

    async def get(port: int, path: str) -> tuple[int, dict]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: kube-probe\r\n\r\n".encode())
        await writer.drain()
        try:
            return _split(await reader.read())
        finally:
            writer.close()

    async def main() -> list[tuple[int, dict]]:
        async with health.serve("127.0.0.1", procs.free_port(), lambda: _probe(**state)) as port:
            assert port
            out = [await get(port, "/live"), await get(port, "/ready")]
            state["db"] = "error: gone"
            out += [await get(port, "/live"), await get(port, "/ready")]
            return out

    live, ready, still_live, not_ready = asyncio.run(main())
    assert (live[0], ready[0], still_live[0], not_ready[0]) == (200, 200, 200, 503)
    assert not_ready[1]["checks"] == {"db": "error: gone"}


def test_port_zero_serves_nothing() -> None:
    async def main() -> int | None:
        async with health.serve("127.0.0.1", 0, _probe) as port:
            return port

    assert asyncio.run(main()) is None

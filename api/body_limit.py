"""A bound on request bodies, enforced before any route reads them.

FastAPI reads a whole JSON body into memory and has no size limit of its own. This ASGI
middleware refuses a body above its limit as soon as the ``Content-Length`` says so, or, for a
streamed (chunked) body, as soon as the bytes received pass it; it never buffers more than the
limit. The answer is a 422 in FastAPI's validation-error shape saying what the limit is.
Bulk uploads (paths in ``overrides``) have their own, larger limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int, overrides: Mapping[str, int]) -> None:
        self.app = app
        self.limit = limit
        self.overrides = dict(overrides)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope["path"], self.limit)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await _too_large(send, limit, declared)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, None, receive), send)


def _replay(chunks: list[bytes], first: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that hands out the buffered body once, then defers to the real one."""
    pending: list[Message] = (
        [first] if first is not None else [{"type": "http.request", "body": b"".join(chunks)}]
    )

    async def _receive() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return _receive


async def _too_large(send: Send, limit: int, declared: int | None) -> None:
    size = f"{declared} bytes" if declared is not None else "more than that"
    body = json.dumps(
        {
            "detail": [
                {
                    "type": "too_large",
                    "loc": ["body"],
                    "msg": f"the request body may be at most {limit} bytes and is {size}: "
                    "send less (split a bulk upload into several)",
                    "input": None,
                }
            ]
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

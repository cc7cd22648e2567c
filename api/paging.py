"""Keyset paging of registry lists: an opaque cursor holding the last key of a page."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

from fastapi import Query

from api.errors import invalid
from meetnet.settings import Settings

_VERSION = "k1"

CursorParam = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
]
LimitParam = Annotated[
    int | None,
    Query(
        ge=1,
        description="Most items in this page (default MEETNET_API_REGISTRY_DEFAULT_LIMIT, 100; "
        "at most MEETNET_API_REGISTRY_MAX_LIMIT, 1000).",
    ),
]


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(f"{_VERSION}.{key}".encode()).rstrip(b"=").decode()


def decode_cursor(token: str | None, key_pattern: str) -> str | None:
    """The key in ``token`` (None without a cursor); a 422 unless this API made the cursor."""
    if token is None:
        return None
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        version, _, key = raw.decode("ascii").partition(".")
        if version == _VERSION and re.fullmatch(key_pattern, key):
            return key
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise invalid(
        "cursor", "malformed cursor: pass the `next_cursor` of a previous page unchanged", token
    )


def page_limit(settings: Settings, limit: int | None) -> int:
    if limit is None:
        return min(settings.api_registry_default_limit, settings.api_registry_max_limit)
    if limit > settings.api_registry_max_limit:
        raise invalid(
            "limit",
            f"limit must be at most {settings.api_registry_max_limit}; page with `cursor` for more",
            limit,
            kind="less_than_equal",
        )
    return limit


def next_cursor(rows: list[dict[str, Any]], key: str, limit: int) -> str | None:
    """The cursor after a page fetched with ``limit + 1`` rows (the extra one is dropped)."""
    if len(rows) <= limit:
        return None
    del rows[limit:]
    return encode_cursor(str(rows[-1][key]))

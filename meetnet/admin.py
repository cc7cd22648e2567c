"""Operator tasks behind ``meetnet admin ...``: API keys straight in the database.

The first admin key cannot come from the API (creating keys needs one), so the operator makes
it here. These call the same ``store.credentials`` functions as the API, on a connection of
their own, after migrating the schema if needed.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from meetnet.settings import Settings
from store import credentials
from store.access import ROLES, Invalid, NotFound, Role
from store.db import aconnect

_NIS = re.compile(r"^[1-9][0-9]{4}$")
_KEY_ID = re.compile(r"^[a-z0-9]{8,32}$")


class AdminError(RuntimeError):
    """A refusal with a message for the operator."""


def _migrate(settings: Settings) -> None:
    from meetnet.services import migrate_db

    migrate_db(settings)


def create_key(
    settings: Settings, role: str, municipality: str | None, name: str
) -> tuple[dict[str, Any], str]:
    if role not in ROLES:
        raise AdminError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if role == "municipality" and municipality is None:
        raise AdminError("a municipality key needs --municipality NIS (e.g. 44021 for Gent)")
    if role != "municipality" and municipality is not None:
        raise AdminError(f"a {role} key belongs to no municipality: leave out --municipality")
    if municipality is not None and not _NIS.match(municipality):
        raise AdminError(f"{municipality!r} is not a NIS code: five digits, e.g. 44021")
    _migrate(settings)
    checked_role: Role = role

    async def go() -> tuple[dict[str, Any], str]:
        conn = await aconnect(settings, app="admin")
        async with conn, conn.transaction():
            return await credentials.create_api_key(conn, checked_role, municipality, name)

    try:
        return asyncio.run(go())
    except Invalid as e:
        raise AdminError(str(e)) from None


def revoke_key(settings: Settings, key_id: str) -> dict[str, Any]:
    if key_id.startswith("mnk_"):  # a whole key pasted: take its id, never echo the secret
        key_id = key_id.split("_")[1] if key_id.count("_") >= 2 else ""
    if not _KEY_ID.match(key_id):
        raise AdminError("not a key id: the part after mnk_ up to the next _")
    _migrate(settings)

    async def go() -> dict[str, Any]:
        conn = await aconnect(settings, app="admin")
        async with conn, conn.transaction():
            return await credentials.revoke_api_key(conn, key_id)

    try:
        return asyncio.run(go())
    except NotFound as e:
        raise AdminError(str(e)) from None


def list_keys(settings: Settings, include_revoked: bool) -> list[dict[str, Any]]:
    _migrate(settings)

    async def go() -> list[dict[str, Any]]:
        conn = await aconnect(settings, app="admin")
        async with conn:
            rows: list[dict[str, Any]] = []
            after = None
            while True:
                page = await credentials.list_api_keys(
                    conn, municipality=None, include_revoked=include_revoked, after=after, limit=500
                )
                rows += page
                if len(page) < 500:
                    return rows
                after = page[-1]["key_id"]

    return asyncio.run(go())

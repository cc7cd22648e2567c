"""API keys (admin only): create (the key is shown once), list without secrets, revoke.
Plus ``GET /v1/me``: who the presented key (or its absence) makes the caller."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from api.auth import AdminCaller, Caller, KeyCacheDep
from api.deps import DatabaseDep, SettingsDep
from api.errors import DATABASE_ERRORS
from api.paging import CursorParam, LimitParam, decode_cursor, next_cursor, page_limit
from api.registry_schemas import NIS_PATTERN, KeyCreate, KeyPublic, Me, NewKey, Page
from store import credentials

log = logging.getLogger(__name__)
router = APIRouter(tags=["API keys"], responses=DATABASE_ERRORS)

KEY_ID_PATTERN = r"^[a-z0-9]{8,32}$"
KeyPath = Annotated[str, Path(pattern=KEY_ID_PATTERN, description="Key id (mnk_<key id>_...).")]


@router.get("/me", response_model=Me, summary="Who am I: the role and municipality of my key")
async def me(caller: Caller) -> Me:
    return Me(role=caller.role, municipality=caller.municipality, key_id=caller.key_id)


@router.post(
    "/keys",
    response_model=NewKey,
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key (admin); the key is shown once",
)
async def create_key(
    database: DatabaseDep, caller: AdminCaller, body: KeyCreate, response: Response
) -> NewKey:
    async with database.write() as conn:
        row, key = await credentials.create_api_key(conn, body.role, body.municipality, body.name)
    log.info(
        "API key created",
        extra={"key_id": row["key_id"], "role": row["role"], "by_key": caller.key_id},
    )
    response.headers["Cache-Control"] = "no-store"
    return NewKey(**row, key=key)


@router.get("/keys", response_model=Page[KeyPublic], summary="List API keys (admin), no secrets")
async def list_keys(
    database: DatabaseDep,
    settings: SettingsDep,
    caller: AdminCaller,
    municipality: Annotated[str | None, Query(pattern=NIS_PATTERN)] = None,
    include_revoked: bool = False,
    cursor: CursorParam = None,
    limit: LimitParam = None,
) -> Page[KeyPublic]:
    n = page_limit(settings, limit)
    after = decode_cursor(cursor, KEY_ID_PATTERN)
    async with database.connection() as conn:
        rows = await credentials.list_api_keys(
            conn,
            municipality=municipality,
            include_revoked=include_revoked,
            after=after,
            limit=n + 1,
        )
    token = next_cursor(rows, "key_id", n)
    return Page(data=[KeyPublic.model_validate(r) for r in rows], next_cursor=token)


@router.get("/keys/{key_id}", response_model=KeyPublic, summary="One API key (admin)")
async def get_key(database: DatabaseDep, caller: AdminCaller, key_id: KeyPath) -> KeyPublic:
    async with database.connection() as conn:
        return KeyPublic.model_validate(await credentials.get_api_key(conn, key_id))


@router.delete("/keys/{key_id}", response_model=KeyPublic, summary="Revoke an API key (admin)")
async def revoke_key(
    database: DatabaseDep, caller: AdminCaller, cache: KeyCacheDep, key_id: KeyPath
) -> KeyPublic:
    """The key stops working at once in this API process, within MEETNET_API_KEY_CACHE_S
    seconds in the others."""
    async with database.write() as conn:
        row = await credentials.revoke_api_key(conn, key_id)
    cache.invalidate(key_id)
    log.info("API key revoked", extra={"key_id": key_id, "by_key": caller.key_id})
    return KeyPublic.model_validate(row)

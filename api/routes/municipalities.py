"""Municipalities, the platform's tenants: everyone reads them, admins register and change them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from api.auth import AdminCaller, Caller
from api.deps import DatabaseDep, SettingsDep
from api.errors import DATABASE_ERRORS
from api.paging import CursorParam, LimitParam, decode_cursor, next_cursor, page_limit
from api.registry_schemas import (
    NIS_PATTERN,
    MunicipalityCreate,
    MunicipalityPublic,
    MunicipalitySummary,
    MunicipalityUpdate,
    Page,
    municipality_columns,
)
from store import registry

router = APIRouter(prefix="/municipalities", tags=["municipalities"], responses=DATABASE_ERRORS)

NisPath = Annotated[str, Path(pattern=NIS_PATTERN, description="NIS code.", examples=["44021"])]


@router.get("", response_model=Page[MunicipalitySummary], summary="List municipalities")
async def list_municipalities(
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
    cursor: CursorParam = None,
    limit: LimitParam = None,
) -> Page[MunicipalitySummary]:
    """Municipalities by NIS code, without their boundaries (GET one for its boundary)."""
    n = page_limit(settings, limit)
    after = decode_cursor(cursor, NIS_PATTERN)
    async with database.connection() as conn:
        rows = await registry.list_municipalities(conn, after=after, limit=n + 1)
    token = next_cursor(rows, "nis_code", n)
    return Page(data=[MunicipalitySummary.from_row(r) for r in rows], next_cursor=token)


@router.get("/{nis_code}", response_model=MunicipalityPublic, summary="One municipality")
async def get_municipality(
    database: DatabaseDep, caller: Caller, nis_code: NisPath
) -> MunicipalityPublic:
    async with database.connection() as conn:
        row = await registry.get_municipality(conn, nis_code)
    return MunicipalityPublic.from_row(row)


@router.post(
    "",
    response_model=MunicipalityPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Register a municipality (admin)",
)
async def create_municipality(
    database: DatabaseDep, caller: AdminCaller, body: MunicipalityCreate
) -> MunicipalityPublic:
    async with database.write() as conn:
        row = await registry.create_municipality(conn, municipality_columns(body.model_dump()))
    return MunicipalityPublic.from_row(row)


@router.patch("/{nis_code}", response_model=MunicipalityPublic, summary="Change (admin)")
async def update_municipality(
    database: DatabaseDep, caller: AdminCaller, nis_code: NisPath, body: MunicipalityUpdate
) -> MunicipalityPublic:
    changes = municipality_columns(body.model_dump(exclude_unset=True))
    async with database.write() as conn:
        row = await registry.update_municipality(conn, nis_code, changes)
    return MunicipalityPublic.from_row(row)

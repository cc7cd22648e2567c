"""Sensor types (kinds of device) and their metrics: everyone reads them, admins manage them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from api.auth import AdminCaller, Caller
from api.deps import DatabaseDep, SettingsDep
from api.errors import DATABASE_ERRORS
from api.paging import CursorParam, LimitParam, decode_cursor, next_cursor, page_limit
from api.registry_schemas import Page, SensorTypeCreate, SensorTypePublic, SensorTypeUpdate
from meetnet.wire import SENSOR_ID_PATTERN
from store import registry

router = APIRouter(prefix="/sensor-types", tags=["sensor types"], responses=DATABASE_ERRORS)

TypePath = Annotated[
    str, Path(pattern=SENSOR_ID_PATTERN, description="Sensor type id.", examples=["air-box"])
]


@router.get("", response_model=Page[SensorTypePublic], summary="List sensor types")
async def list_sensor_types(
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
    cursor: CursorParam = None,
    limit: LimitParam = None,
) -> Page[SensorTypePublic]:
    n = page_limit(settings, limit)
    after = decode_cursor(cursor, SENSOR_ID_PATTERN)
    async with database.connection() as conn:
        rows = await registry.list_sensor_types(conn, after=after, limit=n + 1)
    token = next_cursor(rows, "type_id", n)
    return Page(data=[SensorTypePublic.model_validate(r) for r in rows], next_cursor=token)


@router.get("/{type_id}", response_model=SensorTypePublic, summary="One sensor type")
async def get_sensor_type(
    database: DatabaseDep, caller: Caller, type_id: TypePath
) -> SensorTypePublic:
    async with database.connection() as conn:
        return SensorTypePublic.model_validate(await registry.get_sensor_type(conn, type_id))


@router.post(
    "",
    response_model=SensorTypePublic,
    status_code=status.HTTP_201_CREATED,
    summary="Create a sensor type with its metrics (admin)",
)
async def create_sensor_type(
    database: DatabaseDep, caller: AdminCaller, body: SensorTypeCreate
) -> SensorTypePublic:
    async with database.write() as conn:
        row = await registry.create_sensor_type(conn, body.model_dump())
    return SensorTypePublic.model_validate(row)


@router.patch(
    "/{type_id}",
    response_model=SensorTypePublic,
    summary="Change a sensor type; `metrics` replaces the whole list (admin)",
)
async def update_sensor_type(
    database: DatabaseDep, caller: AdminCaller, type_id: TypePath, body: SensorTypeUpdate
) -> SensorTypePublic:
    async with database.write() as conn:
        row = await registry.update_sensor_type(conn, type_id, body.columns())
    return SensorTypePublic.model_validate(row)


@router.delete(
    "/{type_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a sensor type no sensor uses (admin)",
)
async def delete_sensor_type(
    database: DatabaseDep, caller: AdminCaller, type_id: TypePath
) -> Response:
    async with database.write() as conn:
        await registry.delete_sensor_type(conn, type_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

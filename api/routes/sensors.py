"""Sensors: list with filters, one by one, change, retire. Bulk registration is in bulk.py.

Every query goes through ``store.registry``, which applies the visibility rule of
``store.access``: another municipality's private sensor does not exist for the caller (404),
and another municipality's public sensor can be read but not changed (403).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from api.auth import Caller, Writer
from api.deps import DatabaseDep, SettingsDep
from api.errors import DATABASE_ERRORS, invalid
from api.paging import CursorParam, LimitParam, decode_cursor, next_cursor, page_limit
from api.registry_schemas import NIS_PATTERN, Page, SensorCreate, SensorPublic, SensorUpdate
from meetnet.wire import SENSOR_ID_PATTERN
from store import registry

router = APIRouter(prefix="/sensors", tags=["sensors"], responses=DATABASE_ERRORS)

SensorPath = Annotated[
    str, Path(pattern=SENSOR_ID_PATTERN, description="Sensor id.", examples=["gent-air-001"])
]
_BBOX_FORM = "minlon,minlat,maxlon,maxlat in WGS84 degrees, e.g. 3.65,51.0,3.8,51.1"


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``minlon,minlat,maxlon,maxlat`` -> floats; a 422 saying what is wrong otherwise."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise invalid("bbox", f"bbox must be four numbers: {_BBOX_FORM}", text)
    x0, y0, x1, y1 = values
    if not (-180 <= x0 <= 180 and -180 <= x1 <= 180 and -90 <= y0 <= 90 and -90 <= y1 <= 90):
        raise invalid("bbox", f"bbox is outside WGS84 ranges: {_BBOX_FORM}", text)
    if x0 > x1 or y0 > y1:
        raise invalid(
            "bbox",
            "bbox minimum above maximum: give minlon,minlat,maxlon,maxlat (boxes across the "
            "antimeridian are not supported)",
            text,
        )
    return x0, y0, x1, y1


@router.get("", response_model=Page[SensorPublic], summary="List sensors")
async def list_sensors(
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
    municipality: Annotated[str | None, Query(pattern=NIS_PATTERN, description="NIS code.")] = None,
    type: Annotated[
        str | None, Query(pattern=SENSOR_ID_PATTERN, description="Sensor type id.")
    ] = None,
    status: Literal["active", "maintenance", "retired"] | None = None,
    visibility: Literal["public", "private"] | None = None,
    bbox: Annotated[str | None, Query(max_length=200, description=_BBOX_FORM)] = None,
    cursor: CursorParam = None,
    limit: LimitParam = None,
) -> Page[SensorPublic]:
    """The sensors the caller may see (public ones; with a municipality key also its own
    private ones; all with an admin key), by id. Filters narrow that set, never widen it."""
    n = page_limit(settings, limit)
    filters = registry.SensorFilters(
        municipality=municipality,
        type_id=type,
        status=status,
        visibility=visibility,
        bbox=parse_bbox(bbox) if bbox is not None else None,
    )
    after = decode_cursor(cursor, SENSOR_ID_PATTERN)
    async with database.connection() as conn:
        rows = await registry.list_sensors(conn, caller, filters, after=after, limit=n + 1)
    token = next_cursor(rows, "sensor_id", n)
    return Page(data=[SensorPublic.from_row(r) for r in rows], next_cursor=token)


@router.post(
    "",
    response_model=SensorPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Register a sensor",
)
async def create_sensor(database: DatabaseDep, caller: Writer, body: SensorCreate) -> SensorPublic:
    """A municipality key registers in its own municipality; an admin names it."""
    async with database.write() as conn:
        row = await registry.create_sensor(conn, caller, body.columns())
    return SensorPublic.from_row(row)


@router.get("/{sensor_id}", response_model=SensorPublic, summary="One sensor")
async def get_sensor(database: DatabaseDep, caller: Caller, sensor_id: SensorPath) -> SensorPublic:
    async with database.connection() as conn:
        return SensorPublic.from_row(await registry.get_sensor(conn, caller, sensor_id))


@router.patch("/{sensor_id}", response_model=SensorPublic, summary="Change a sensor")
async def update_sensor(
    database: DatabaseDep, caller: Writer, sensor_id: SensorPath, body: SensorUpdate
) -> SensorPublic:
    """Only the fields given change; `sensor_id` and `municipality` never do."""
    async with database.write() as conn:
        row = await registry.update_sensor(conn, caller, sensor_id, body.columns())
    return SensorPublic.from_row(row)


@router.delete("/{sensor_id}", response_model=SensorPublic, summary="Retire a sensor")
async def retire_sensor(
    database: DatabaseDep, caller: Writer, sensor_id: SensorPath
) -> SensorPublic:
    """Sets the status to `retired` and revokes its MQTT credentials; its readings stay
    queryable. Idempotent."""
    async with database.write() as conn:
        row = await registry.retire_sensor(conn, caller, sensor_id)
    return SensorPublic.from_row(row)

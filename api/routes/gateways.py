"""Gateways: one MQTT identity publishing for several sensors of one municipality.

Gateways are never public: a municipality key sees and manages its own, an admin all; any
other gateway does not exist for the caller (404). Reader keys get 403.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from api.auth import Writer
from api.deps import DatabaseDep, SettingsDep
from api.errors import DATABASE_ERRORS
from api.paging import CursorParam, LimitParam, decode_cursor, next_cursor, page_limit
from api.registry_schemas import NIS_PATTERN, GatewayCreate, GatewayPublic, GatewayUpdate, Page
from meetnet.wire import SENSOR_ID_PATTERN
from store import registry

router = APIRouter(prefix="/gateways", tags=["gateways"], responses=DATABASE_ERRORS)

GatewayPath = Annotated[
    str, Path(pattern=SENSOR_ID_PATTERN, description="Gateway id.", examples=["gent-gw-01"])
]


@router.get("", response_model=Page[GatewayPublic], summary="List your gateways")
async def list_gateways(
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Writer,
    municipality: Annotated[str | None, Query(pattern=NIS_PATTERN)] = None,
    status: Literal["active", "retired"] | None = None,
    cursor: CursorParam = None,
    limit: LimitParam = None,
) -> Page[GatewayPublic]:
    n = page_limit(settings, limit)
    after = decode_cursor(cursor, SENSOR_ID_PATTERN)
    async with database.connection() as conn:
        rows = await registry.list_gateways(
            conn, caller, municipality=municipality, status=status, after=after, limit=n + 1
        )
    token = next_cursor(rows, "gateway_id", n)
    return Page(data=[GatewayPublic.model_validate(r) for r in rows], next_cursor=token)


@router.post(
    "",
    response_model=GatewayPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Register a gateway",
)
async def create_gateway(
    database: DatabaseDep, caller: Writer, body: GatewayCreate
) -> GatewayPublic:
    async with database.write() as conn:
        row = await registry.create_gateway(conn, caller, body.model_dump())
    return GatewayPublic.model_validate(row)


@router.get("/{gateway_id}", response_model=GatewayPublic, summary="One gateway")
async def get_gateway(
    database: DatabaseDep, caller: Writer, gateway_id: GatewayPath
) -> GatewayPublic:
    async with database.connection() as conn:
        return GatewayPublic.model_validate(await registry.get_gateway(conn, caller, gateway_id))


@router.patch("/{gateway_id}", response_model=GatewayPublic, summary="Change a gateway")
async def update_gateway(
    database: DatabaseDep, caller: Writer, gateway_id: GatewayPath, body: GatewayUpdate
) -> GatewayPublic:
    async with database.write() as conn:
        row = await registry.update_gateway(
            conn, caller, gateway_id, body.model_dump(exclude_unset=True)
        )
    return GatewayPublic.model_validate(row)


@router.delete("/{gateway_id}", response_model=GatewayPublic, summary="Retire a gateway")
async def retire_gateway(
    database: DatabaseDep, caller: Writer, gateway_id: GatewayPath
) -> GatewayPublic:
    """Sets the status to `retired` and revokes its MQTT credentials. Idempotent."""
    async with database.write() as conn:
        row = await registry.update_gateway(conn, caller, gateway_id, {"status": "retired"})
    return GatewayPublic.model_validate(row)

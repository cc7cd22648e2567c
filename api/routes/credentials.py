"""MQTT credentials of sensors and gateways: create or rotate (the password is shown once),
list (never a secret or hash), revoke. The broker picks changes up from ``device_credentials``.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, status

from api.auth import Writer
from api.deps import DatabaseDep, SettingsDep
from api.errors import DATABASE_ERRORS
from api.registry_schemas import CredentialPublic, NewCredential
from api.routes.gateways import GatewayPath
from api.routes.sensors import SensorPath
from store import credentials
from store.credentials import DeviceKind

log = logging.getLogger(__name__)
router = APIRouter(tags=["credentials"], responses=DATABASE_ERRORS)

_ROTATE_DOC = (
    "Revokes the active credential, if any, and returns a new MQTT username and password. "
    "The password is shown only in this response (it is stored as a hash): keep it. "
    "The broker accepts it, and stops accepting the old one, within seconds."
)


async def _rotate(
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Writer,
    kind: DeviceKind,
    device_id: str,
    response: Response,
) -> NewCredential:
    async with database.write() as conn:
        row, password = await credentials.rotate_device_credential(conn, caller, kind, device_id)
    # An audit line: who did what to which device; never the password.
    log.info(
        "device credential rotated",
        extra={"device": device_id, "credential_id": row["credential_id"], "by_key": caller.key_id},
    )
    response.headers["Cache-Control"] = "no-store"
    topic = f"{settings.mqtt_topic_prefix}/{kind}s/{device_id}"
    return NewCredential(**row, password=password, topic=topic)


async def _list(
    database: DatabaseDep, caller: Writer, kind: DeviceKind, device_id: str
) -> list[CredentialPublic]:
    async with database.connection() as conn:
        rows = await credentials.list_device_credentials(conn, caller, kind, device_id)
    return [CredentialPublic.model_validate(r) for r in rows]


async def _revoke(
    database: DatabaseDep, caller: Writer, kind: DeviceKind, device_id: str
) -> Response:
    async with database.write() as conn:
        n = await credentials.revoke_device_credential(conn, caller, kind, device_id)
    log.info(
        "device credential revoked",
        extra={"device": device_id, "revoked": n, "by_key": caller.key_id},
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/sensors/{sensor_id}/credentials",
    response_model=NewCredential,
    status_code=status.HTTP_201_CREATED,
    summary="Create or rotate a sensor's MQTT credentials",
    description=_ROTATE_DOC,
)
async def rotate_sensor_credentials(
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Writer,
    sensor_id: SensorPath,
    response: Response,
) -> NewCredential:
    return await _rotate(database, settings, caller, "sensor", sensor_id, response)


@router.get(
    "/sensors/{sensor_id}/credentials",
    response_model=list[CredentialPublic],
    summary="A sensor's credentials (no secrets), newest first",
)
async def list_sensor_credentials(
    database: DatabaseDep, caller: Writer, sensor_id: SensorPath
) -> list[CredentialPublic]:
    return await _list(database, caller, "sensor", sensor_id)


@router.delete(
    "/sensors/{sensor_id}/credentials",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a sensor's active credentials",
)
async def revoke_sensor_credentials(
    database: DatabaseDep, caller: Writer, sensor_id: SensorPath
) -> Response:
    return await _revoke(database, caller, "sensor", sensor_id)


@router.post(
    "/gateways/{gateway_id}/credentials",
    response_model=NewCredential,
    status_code=status.HTTP_201_CREATED,
    summary="Create or rotate a gateway's MQTT credentials",
    description=_ROTATE_DOC,
)
async def rotate_gateway_credentials(
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Writer,
    gateway_id: GatewayPath,
    response: Response,
) -> NewCredential:
    return await _rotate(database, settings, caller, "gateway", gateway_id, response)


@router.get(
    "/gateways/{gateway_id}/credentials",
    response_model=list[CredentialPublic],
    summary="A gateway's credentials (no secrets), newest first",
)
async def list_gateway_credentials(
    database: DatabaseDep, caller: Writer, gateway_id: GatewayPath
) -> list[CredentialPublic]:
    return await _list(database, caller, "gateway", gateway_id)


@router.delete(
    "/gateways/{gateway_id}/credentials",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a gateway's active credentials",
)
async def revoke_gateway_credentials(
    database: DatabaseDep, caller: Writer, gateway_id: GatewayPath
) -> Response:
    return await _revoke(database, caller, "gateway", gateway_id)

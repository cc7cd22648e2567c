"""The API's routers: versioned data and registry routes under /v1, operational ones at the root."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import (
    bulk,
    credentials,
    gateways,
    health,
    keys,
    municipalities,
    readings,
    sensor_types,
    sensors,
)

api_router = APIRouter()
for module in (
    readings,
    municipalities,
    sensor_types,
    bulk,  # before sensors: /sensors/bulk is not a sensor id
    sensors,
    gateways,
    credentials,
    keys,
):
    api_router.include_router(module.router, prefix="/v1")
api_router.include_router(health.router)

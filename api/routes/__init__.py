"""The API's routers: versioned data and registry routes under /v1, operational ones at the root."""

from __future__ import annotations

from fastapi import APIRouter

from api.ld import routes as ld_routes
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
from api.sta import routes as sta_routes

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
api_router.include_router(sta_routes.router)
api_router.include_router(ld_routes.router)

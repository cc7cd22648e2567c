"""The API's routers: versioned data routes under /v1, operational ones at the root."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import health, readings

api_router = APIRouter()
api_router.include_router(readings.router, prefix="/v1")
api_router.include_router(health.router)

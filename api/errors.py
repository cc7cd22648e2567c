"""Error responses: one body shape, ``{"detail": "<message>"}`` (FastAPI's own for
HTTPException), for every status except 422, which keeps FastAPI's validation-error shape.

Database failures are mapped here once instead of in each route, so none becomes a bare 500:
a statement that hits ``statement_timeout`` is a 504, an unreachable database a 503.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg.errors
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from api.schemas import Message
from store.db import DatabaseUnavailable

log = logging.getLogger(__name__)

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"model": Message, "description": "Unknown sensor or metric."}
}
DATABASE_ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_503_SERVICE_UNAVAILABLE: {
        "model": Message,
        "description": "The database cannot be reached; retry later.",
    },
    status.HTTP_504_GATEWAY_TIMEOUT: {
        "model": Message,
        "description": "The query ran longer than the statement timeout; ask for less.",
    },
}


def invalid(
    param: str, message: str, value: Any, *, where: str = "query", kind: str = "value_error"
) -> RequestValidationError:
    """A 422 in FastAPI's validation-error shape for a check that needs more than the type of
    one parameter (limits from the settings, the order of two timestamps, a cursor)."""
    return RequestValidationError(
        [{"type": kind, "loc": (where, param), "msg": message, "input": value}]
    )


def _detail(code: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=code, content={"detail": message})


async def _query_canceled(request: Request, exc: Exception) -> JSONResponse:
    ms = request.app.state.settings.api_statement_timeout_ms
    log.warning("query canceled", extra={"path": request.url.path, "error": str(exc).strip()})
    return _detail(
        status.HTTP_504_GATEWAY_TIMEOUT,
        f"the query took longer than the statement timeout of {ms} ms; "
        "ask for a shorter time range or a smaller limit",
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", extra={"path": request.url.path, "error": str(exc).strip()})
    return _detail(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "the database is unavailable; retry later",
    )


def install(app: FastAPI) -> None:
    """Register the handlers. Starlette picks the most specific class of an exception, so
    QueryCanceled (an OperationalError) gets its own answer."""
    app.add_exception_handler(psycopg.errors.QueryCanceled, _query_canceled)
    app.add_exception_handler(psycopg.OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)

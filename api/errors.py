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
from store.access import Conflict, Forbidden, Invalid, NotFound
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


def _body_errors(exc: Invalid, prefix: tuple[str | int, ...] = ("body",)) -> list[dict[str, Any]]:
    return [
        {"type": e.type, "loc": [*prefix, *e.loc], "msg": e.msg, "input": e.input}
        for e in exc.errors
    ]


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return _detail(status.HTTP_404_NOT_FOUND, str(exc))


async def _forbidden(request: Request, exc: Exception) -> JSONResponse:
    return _detail(status.HTTP_403_FORBIDDEN, str(exc))


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return _detail(status.HTTP_409_CONFLICT, str(exc))


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Invalid)
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": _body_errors(exc)}
    )


async def _integrity(request: Request, exc: Exception) -> JSONResponse:
    # The registry checks references and uniqueness before writing; this is a concurrent
    # request that won the race in between. Nothing was written (the transaction rolled back).
    # Only the SQLSTATE and constraint: a violation's DETAIL can quote a whole row.
    diag = getattr(exc, "diag", None)
    log.info(
        "integrity error",
        extra={
            "path": request.url.path,
            "sqlstate": getattr(exc, "sqlstate", None),
            "constraint": getattr(diag, "constraint_name", None),
        },
    )
    return _detail(
        status.HTTP_409_CONFLICT,
        "a concurrent change conflicts with this request; nothing was written: retry it",
    )


async def _check_violation(request: Request, exc: Exception) -> JSONResponse:
    # Input validation should have caught it; name the rule, never echo the row.
    assert isinstance(exc, psycopg.errors.CheckViolation)
    constraint = exc.diag.constraint_name or "?"
    log.warning("check violation", extra={"path": request.url.path, "constraint": constraint})
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={
            "detail": [
                {
                    "type": "constraint",
                    "loc": ["body"],
                    "msg": f"a value breaks the registry's rule {constraint!r}; correct it",
                    "input": None,
                }
            ]
        },
    )


def install(app: FastAPI) -> None:
    """Register the handlers. Starlette picks the most specific class of an exception, so
    QueryCanceled (an OperationalError) gets its own answer."""
    app.add_exception_handler(psycopg.errors.QueryCanceled, _query_canceled)
    app.add_exception_handler(psycopg.OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(Invalid, _invalid)
    app.add_exception_handler(psycopg.errors.IntegrityError, _integrity)
    app.add_exception_handler(psycopg.errors.CheckViolation, _check_violation)

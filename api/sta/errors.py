"""SensorThings error responses: ``{"code": <status>, "type": "error", "message": "..."}``
(the body FROST-Server and its clients use), always a 4xx for bad input."""

from __future__ import annotations

import logging

import psycopg.errors
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


class StaError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> StaError:
    return StaError(400, message)


def not_found(message: str) -> StaError:
    return StaError(404, message)


def not_implemented(message: str) -> StaError:
    return StaError(501, message)


def body(status: int, message: str) -> dict[str, object]:
    return {"code": status, "type": "error", "message": message}


async def _sta_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StaError)
    return JSONResponse(body(exc.status, exc.message), exc.status, headers=exc.headers)


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # A value the database cannot compute for this input (division by zero, a negative
    # substring length, an impossible date in a property): the client's expression, not a
    # server fault. Only SQLSTATE and the database's message, which names the operation.
    assert isinstance(exc, psycopg.errors.DataError)
    if not request.url.path.startswith(("/sta/", "/ld/")):
        log.error("data error", extra={"path": request.url.path, "sqlstate": exc.sqlstate})
        return JSONResponse({"detail": "internal error"}, 500)
    primary = exc.diag.message_primary or "invalid value"
    log.info("expression could not be evaluated", extra={"sqlstate": exc.sqlstate})
    return JSONResponse(body(400, f"the expression could not be evaluated: {primary}"), 400)


async def _compile_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(body(400, str(exc)), 400)


def install(app: FastAPI) -> None:
    from api.sta.compile import CompileError

    app.add_exception_handler(StaError, _sta_error)
    app.add_exception_handler(CompileError, _compile_error)
    app.add_exception_handler(psycopg.errors.DataError, _data_error)

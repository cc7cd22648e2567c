"""Connections to PostgreSQL/TimescaleDB."""

from __future__ import annotations

import psycopg

from meetnet.settings import Settings


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached; retriable."""

    retriable = True


def _params(settings: Settings, app: str, autocommit: bool) -> dict[str, object]:
    return {
        "conninfo": settings.dsn,
        "application_name": f"meetnet-{app}",
        "autocommit": autocommit,
        "connect_timeout": 10,
    }


def connect(settings: Settings, *, app: str, autocommit: bool = False) -> psycopg.Connection:
    try:
        return psycopg.connect(**_params(settings, app, autocommit))  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        raise DatabaseUnavailable(f"cannot connect to the database: {e}") from e


async def aconnect(
    settings: Settings, *, app: str, autocommit: bool = False
) -> psycopg.AsyncConnection:
    try:
        return await psycopg.AsyncConnection.connect(**_params(settings, app, autocommit))  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        raise DatabaseUnavailable(f"cannot connect to the database: {e}") from e

"""Dependencies of the routes, as ``Annotated`` aliases (``SettingsDep``, ``DatabaseDep``;
the caller's identity, ``Caller``/``Writer``/``AdminCaller``, is in ``api/auth.py``).

The routes take the :class:`Database` rather than a connection: a request borrows a pooled
connection only after its parameters are validated, so a stream of bad requests holds none, and
a 422 stays a 422 while the database is down.

**Writes.** Every pooled connection defaults to read-only transactions, so a read route cannot
write by mistake. The registry's writes go through :meth:`Database.write`: one explicit
``READ WRITE`` transaction on a connection of the same pool, committed when the block ends
and rolled back when it raises, so a failed request leaves nothing half-written. (One pool
rather than a second one for writes: registry writes are rare and short, and the read-only
default stays the rule on every connection.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import psycopg
from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from meetnet.settings import Settings
from store.db import DatabaseUnavailable

log = logging.getLogger(__name__)

# Per worker process. A query API connection is busy for milliseconds; more connections than
# this per process would mostly queue inside PostgreSQL instead of here.
POOL_MIN = 1
POOL_MAX = 10
# How long a request waits for a free (or new) connection before it gets a 503.
CONNECTION_WAIT_S = 5.0


class Database:
    """The connection pool of one app. Created closed; the app's lifespan opens and closes it
    (a new pool each time, so an app can be started again, as tests do)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: AsyncConnectionPool | None = None

    async def open(self) -> None:
        timeout_ms = str(self.settings.api_statement_timeout_ms)

        async def configure(conn: psycopg.AsyncConnection) -> None:
            # Session settings of every pooled connection: a bound on each statement, UTC
            # datetimes back from psycopg, and no writes from the query API.
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                " set_config('TimeZone', 'UTC', false),"
                " set_config('default_transaction_read_only', 'on', false)",
                (timeout_ms,),
            )

        self._pool = AsyncConnectionPool(
            self.settings.dsn,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            kwargs={"autocommit": True, "application_name": "meetnet-api", "connect_timeout": 5},
            configure=configure,
            timeout=CONNECTION_WAIT_S,
            name="meetnet-api",
            open=False,
        )
        # Do not wait for the first connection: the API starts (and /health reports the
        # database) even while PostgreSQL is down; the pool keeps reconnecting.
        await self._pool.open(wait=False)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close(timeout=5.0)
            self._pool = None

    @asynccontextmanager
    async def connection(
        self, timeout: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection]:
        """Borrow a connection; PoolTimeout (-> 503) when none is free within ``timeout``."""
        if self._pool is None:
            raise DatabaseUnavailable("the database pool is not open")
        async with self._pool.connection(timeout=timeout) as conn:
            yield conn

    @asynccontextmanager
    async def write(self, timeout: float | None = None) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection inside one read-write transaction (see the module's docstring)."""
        async with self.connection(timeout) as conn, conn.transaction():
            await conn.execute("SET TRANSACTION READ WRITE")
            yield conn


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]

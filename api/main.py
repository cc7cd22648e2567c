"""The query API application: wiring only (routes in api/routes, dependencies in api/deps).

``create_app(settings)`` builds the app; ``serve()`` runs it under uvicorn. With several
workers, each worker process builds its own app and pool through :func:`app_factory`, from the
``MEETNET_*`` environment (which ``serve`` fills from its settings first).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from api import errors
from api.auth import KeyCache
from api.body_limit import BodyLimit
from api.deps import Database
from api.producer import ReadingsProducer
from api.routes import api_router
from api.routes.bulk import BULK_PATH
from api.sta import errors as sta_errors
from meetnet import logs
from meetnet.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("meetnet")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings) -> FastAPI:
    database = Database(settings)
    producer = ReadingsProducer(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await database.open()
        log.info(
            "query API started", extra={"statement_timeout_ms": settings.api_statement_timeout_ms}
        )
        try:
            yield
        finally:
            await producer.close()
            await database.close()
            log.info("query API stopped")

    app = FastAPI(
        title="meetnet",
        version=_version(),
        summary="Query and registry API of meetnet, the IoT sensor data platform.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.readings_producer = producer
    app.state.key_cache = KeyCache(settings.api_key_cache_s)
    errors.install(app)
    sta_errors.install(app)
    app.include_router(api_router)
    app.add_middleware(
        BodyLimit,
        limit=settings.api_max_body_bytes,
        overrides={BULK_PATH: settings.api_bulk_max_bytes},
    )
    return app


def app_factory() -> FastAPI:
    """Entry point of each uvicorn worker process (``uvicorn --factory api.main:app_factory``)."""
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)


def _export(settings: Settings) -> None:
    """Put ``settings`` in this process's environment, for worker processes to read back."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        os.environ[f"MEETNET_{name.upper()}"] = text


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run the API until interrupted. Access logging is off (one line per request is noise at
    the request rates of an API polled by dashboards); errors are still logged. ``log_config``
    is None so uvicorn keeps meetnet's logging set-up instead of installing its own."""
    log.info("serving the query API", extra={"url": f"http://{host}:{port}", "workers": workers})
    if workers > 1:
        _export(settings)
        uvicorn.run(
            "api.main:app_factory",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            access_log=False,
            log_config=None,
        )
    else:
        uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_config=None)

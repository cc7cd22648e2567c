"""Liveness of the engines behind the API, for load balancers and people."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import psycopg
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from api.deps import Database, DatabaseDep, SettingsDep
from api.schemas import Health, HealthProblem

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

# Each check is bounded on its own and they run concurrently: /health answers within ~2 s.
CHECK_TIMEOUT_S = 2.0
TCP_TIMEOUT_S = 1.0
POOL_WAIT_S = 1.0


def bootstrap_servers(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port,[v6]:port`` -> [(host, port)]; 9092 when a port is missing."""
    out = []
    for item in bootstrap.split(","):
        item = item.strip().rpartition("://")[2]
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or (":" in host and not host.startswith("[")):
            host, port = item, "9092"  # no port, or a bare IPv6 address
        out.append((host.strip("[]"), int(port)))
    return out


async def check_database(database: Database) -> None:
    try:
        async with database.connection(timeout=POOL_WAIT_S) as conn:
            await conn.execute("SELECT 1")
    except PoolTimeout:
        # No pooled connection to lend: connect directly to learn why (refused, bad password,
        # ...). If that works, the database is up and the pool is exhausted: still a failure.
        direct = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(database.settings.dsn, connect_timeout=2),
            CHECK_TIMEOUT_S - POOL_WAIT_S,
        )
        await direct.close()
        raise PoolTimeout(
            f"the database answers, but no pooled connection was free within {POOL_WAIT_S} s"
        ) from None


async def _connect(host: str, port: int) -> None:
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TCP_TIMEOUT_S)
    writer.close()


async def check_kafka(bootstrap: str) -> None:
    """OK when a bootstrap server answers a Kafka metadata request: that is all a Kafka client
    needs to find the cluster. First a TCP connection to each server (concurrently), whose
    errors say why nothing answers; then the request, as anything can accept a connection (a
    proxy, another service on the port)."""
    servers = bootstrap_servers(bootstrap)
    if not servers:
        raise ValueError("no Kafka bootstrap servers configured")
    results = await asyncio.gather(*(_connect(h, p) for h, p in servers), return_exceptions=True)
    reachable = [f"{h}:{p}" for (h, p), r in zip(servers, results, strict=True) if r is None]
    if not reachable:
        raise ConnectionError(
            "; ".join(
                f"{h}:{p}: {_describe(r)}"
                for (h, p), r in zip(servers, results, strict=True)
                if isinstance(r, BaseException)
            )
        )
    client = AIOKafkaClient(
        bootstrap_servers=reachable, client_id="meetnet-api-health", request_timeout_ms=1500
    )
    try:
        await client.bootstrap()
    except KafkaError:
        raise ConnectionError(
            f"{', '.join(reachable)} accepted a connection but did not answer a Kafka "
            "metadata request"
        ) from None
    finally:
        await client.close()


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "no answer (timed out)"
    return " ".join(str(e).split()) or type(e).__name__


async def _run(name: str, check: Coroutine[Any, Any, None]) -> str:
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT_S + 0.5)
    except Exception as e:
        log.warning("health check failed", extra={"component": name, "error": _describe(e)})
        return f"error: {_describe(e)}"
    return "ok"


@router.get(
    "/health",
    response_model=Health,
    summary="Are the database and Kafka reachable?",
    responses={
        status.HTTP_503_SERVICE_UNAVAILABLE: {
            "model": HealthProblem,
            "description": "At least one component is unreachable; the body names it.",
        }
    },
)
async def health(database: DatabaseDep, settings: SettingsDep) -> Health | JSONResponse:
    """`SELECT 1` on the database and a metadata request to the Kafka bootstrap servers,
    concurrently, each bounded to ~2 s."""
    db_state, kafka_state = await asyncio.gather(
        _run("database", check_database(database)),
        _run("kafka", check_kafka(settings.kafka_bootstrap)),
    )
    if db_state == "ok" and kafka_state == "ok":
        return Health(status="ok", database=db_state, kafka=kafka_state)
    failed = [f"{n} {s}" for n, s in (("database", db_state), ("kafka", kafka_state)) if s != "ok"]
    problem = HealthProblem(
        detail="; ".join(failed), status="unavailable", database=db_state, kafka=kafka_state
    )
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content=problem.model_dump()
    )

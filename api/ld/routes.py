"""Linked-data routes under ``/ld``: JSON-LD (``application/ld+json``) views of sensors,
measuring points, sensor types, metrics, Datastreams, readings and rollups, with the
``@context`` at ``/ld/context.jsonld``. Dedicated routes rather than content negotiation on
the SensorThings URLs, so each document has one stable, dereferenceable IRI; every document
links its SensorThings twin with ``rdfs:seeAlso``.

Visibility is the registry's: a private sensor of another municipality, its Datastreams and
readings do not exist here either (404).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from fastapi import APIRouter, Path, Query, Request, Response

from api.auth import Caller
from api.deps import DatabaseDep, SettingsDep
from api.ld import context, documents, rollups
from api.routes.readings import QueryTimestamp, decode_cursor, encode_cursor
from api.schemas import rfc3339_utc
from api.sta import ids
from api.sta.errors import bad_request, not_found
from meetnet.wire import METRIC_PATTERN, SENSOR_ID_PATTERN
from store import queries, registry
from store.access import NotFound, Principal

router = APIRouter(prefix="/ld", tags=["linked data (JSON-LD)"])

MAX_SPAN = timedelta(days=366)
DEFAULT_SPAN = timedelta(hours=24)
DS_PATTERN = SENSOR_ID_PATTERN[:-1] + ":" + METRIC_PATTERN[1:]
SensorId = Annotated[str, Path(pattern=SENSOR_ID_PATTERN, examples=["gent-air-001"])]
DatastreamId = Annotated[str, Path(pattern=DS_PATTERN, examples=["gent-air-001:pm25"])]


def _base(request: Request, public_url: str) -> str:
    return public_url or str(request.base_url).rstrip("/")


def _ld(body: Any) -> Response:
    return Response(msgspec.json.encode(body), media_type=context.CONTENT_TYPE)


@router.get("/context.jsonld", summary="The JSON-LD @context of every /ld document")
async def get_context(request: Request, settings: SettingsDep) -> Response:
    return Response(
        msgspec.json.encode(context.context(_base(request, settings.api_public_url))),
        media_type=context.CONTENT_TYPE,
        headers={"Cache-Control": "public, max-age=3600"},
    )


async def _sensor(conn: Any, caller: Principal, sensor_id: str) -> dict[str, Any]:
    try:
        return await registry.get_sensor(conn, caller, sensor_id)
    except NotFound:
        raise not_found(f"no sensor {sensor_id!r}") from None


async def _metrics(conn: Any, type_id: str) -> list[tuple[str, str]]:
    t = await registry.get_sensor_type(conn, type_id)
    return [(m["name"], m["unit"]) for m in t["metrics"]]


async def _stream(conn: Any, caller: Principal, ds_id: str) -> tuple[dict[str, Any], str, str]:
    parsed = ids.parse_datastream_id(ds_id)
    if parsed is None:
        raise not_found(f"no Datastream {ds_id!r}")
    sensor = await _sensor(conn, caller, parsed[0])
    unit = dict(await _metrics(conn, sensor["type_id"])).get(parsed[1])
    if unit is None:
        raise not_found(f"no Datastream {ds_id!r}")
    return sensor, parsed[1], unit


@router.get(
    "/sensors/{sensor_id}", summary="A sensor (sosa:Sensor), its measuring point and Datastreams"
)
async def get_sensor(
    sensor_id: SensorId,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
) -> Response:
    iris = documents.Iris(_base(request, settings.api_public_url))
    async with database.connection() as conn:
        sensor = await _sensor(conn, caller, sensor_id)
        metrics = await _metrics(conn, sensor["type_id"])
    return _ld(documents.sensor_doc(iris, sensor, metrics))


@router.get("/features/{sensor_id}", summary="A measuring point (sosa:Platform, FeatureOfInterest)")
async def get_feature(
    sensor_id: SensorId,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
) -> Response:
    iris = documents.Iris(_base(request, settings.api_public_url))
    async with database.connection() as conn:
        sensor = await _sensor(conn, caller, sensor_id)
    return _ld(documents.doc(iris, documents.feature_node(iris, sensor)))


@router.get("/procedures/{type_id}", summary="A sensor type as a sosa:Procedure")
async def get_procedure(
    type_id: SensorId,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
) -> Response:
    iris = documents.Iris(_base(request, settings.api_public_url))
    async with database.connection() as conn:
        try:
            t = await registry.get_sensor_type(conn, type_id)
        except NotFound:
            raise not_found(f"no sensor type {type_id!r}") from None
    return _ld(documents.procedure_doc(iris, t, [m["name"] for m in t["metrics"]]))


@router.get("/procedures/aggregation/{level}/{stat}", summary="A rollup aggregation procedure")
async def get_aggregation(
    level: str, stat: str, request: Request, settings: SettingsDep
) -> Response:
    if level not in rollups.BY_NAME or stat not in documents.STATISTICS:
        raise not_found(
            f"no aggregation {level}/{stat}; levels: {', '.join(rollups.BY_NAME)}; statistics: "
            + ", ".join(documents.STATISTICS)
        )
    iris = documents.Iris(_base(request, settings.api_public_url))
    return _ld(documents.aggregation_doc(iris, level, stat))


@router.get("/agents/meetnet", summary="meetnet's stream processor, the maker of rollups")
async def get_agent(request: Request, settings: SettingsDep) -> Response:
    return _ld(documents.agent_doc(documents.Iris(_base(request, settings.api_public_url))))


@router.get("/properties/{metric}", summary="A metric as a sosa:ObservableProperty")
async def get_property(
    metric: Annotated[str, Path(pattern=METRIC_PATTERN)],
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
) -> Response:
    iris = documents.Iris(_base(request, settings.api_public_url))
    async with database.connection() as conn:
        cur = await conn.execute(
            "SELECT description FROM sensor_type_metrics WHERE metric = %s ORDER BY type_id",
            (metric,),
        )
        rows = await cur.fetchall()
    if not rows:
        raise not_found(f"no metric {metric!r}: no sensor type declares it")
    return _ld(documents.property_doc(iris, metric, [r[0] for r in rows]))


@router.get("/datastreams/{ds_id}", summary="A Datastream as a sosa:ObservationCollection")
async def get_datastream(
    ds_id: DatastreamId,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
) -> Response:
    iris = documents.Iris(_base(request, settings.api_public_url))
    async with database.connection() as conn:
        sensor, metric, unit = await _stream(conn, caller, ds_id)
    return _ld(documents.doc(iris, documents.datastream_node(iris, sensor, metric, unit)))


def _range(from_: datetime | None, to: datetime | None) -> tuple[datetime, datetime]:
    end = to if to is not None else datetime.now(UTC)
    start = from_ if from_ is not None else end - DEFAULT_SPAN
    if end <= start:
        raise bad_request(f"`to` ({rfc3339_utc(end)}) must be after `from` ({rfc3339_utc(start)})")
    if end - start > MAX_SPAN:
        raise bad_request(f"one request may span at most {MAX_SPAN.days} days")
    return start, end


def _limit(limit: int | None, default: int, maximum: int) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise bad_request(f"limit must be between 1 and {maximum}")
    return limit


@router.get("/datastreams/{ds_id}/observations", summary="Raw readings as sosa:Observations")
async def get_observations(
    ds_id: DatastreamId,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
    from_: Annotated[QueryTimestamp | None, Query(alias="from")] = None,
    to: Annotated[QueryTimestamp | None, Query()] = None,
    limit: Annotated[int | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Readings with `from <= time < to` (default: the last 24 h), oldest first, at most
    `limit` (1000; at most MEETNET_API_MAX_LIMIT); `nextPage` links the rest."""
    iris = documents.Iris(_base(request, settings.api_public_url))
    start, end = _range(from_, to)
    n = _limit(limit, min(1000, settings.api_max_limit), settings.api_max_limit)
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor)
        except ValueError:
            raise bad_request("malformed cursor: pass the one in nextPage unchanged") from None
    async with database.connection() as conn:
        sensor, metric, unit = await _stream(conn, caller, ds_id)
        try:
            page = await queries.raw_readings(
                conn, sensor["sensor_id"], metric=metric, start=start, end=end, limit=n, after=after
            )
        except (queries.UnknownSensor, queries.UnknownMetric):
            page = queries.RawPage([], None)
    next_page = None
    if page.next_after is not None:
        params = {"from": rfc3339_utc(start), "to": rfc3339_utc(end), "limit": str(n)}
        params["cursor"] = encode_cursor(page.next_after)
        next_page = f"{iris.datastream(ds_id)}/observations?{urlencode(params)}"
    readings = [(r.ts, r.value) for r in page.readings]
    return _ld(documents.observations_doc(iris, sensor, metric, unit, readings, next_page))


@router.get("/observations/{obs_id}", summary="One reading as a sosa:Observation")
async def get_observation(
    obs_id: str, request: Request, database: DatabaseDep, settings: SettingsDep, caller: Caller
) -> Response:
    iris = documents.Iris(_base(request, settings.api_public_url))
    parsed = ids.parse_observation_id(obs_id)
    if parsed is None:
        raise not_found(f"no Observation {obs_id!r}")
    ds_id, ts = parsed
    async with database.connection() as conn:
        sensor, metric, unit = await _stream(conn, caller, ds_id)
        cur = await conn.execute(
            "SELECT r.value FROM series s JOIN readings r ON r.series_id = s.series_id"
            " WHERE s.sensor_id = %s AND s.metric = %s AND r.ts = %s",
            (sensor["sensor_id"], metric, ts),
        )
        row = await cur.fetchone()
    if row is None:
        raise not_found(f"no Observation {obs_id!r}")
    node = documents.observation_node(iris, sensor, metric, unit, ts, row[0])
    return _ld(documents.doc(iris, node))


@router.get(
    "/datastreams/{ds_id}/rollups/{level}",
    summary="Rollup statistics as sosa:Observations with PROV provenance",
)
async def get_rollups(
    ds_id: DatastreamId,
    level: str,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
    from_: Annotated[QueryTimestamp | None, Query(alias="from")] = None,
    to: Annotated[QueryTimestamp | None, Query()] = None,
    stat: Annotated[
        str | None, Query(description="Comma-separated: mean,min,max,sum,count,stddev")
    ] = None,
    limit: Annotated[int | None, Query(description="Buckets per page (100, at most 1000)")] = None,
) -> Response:
    """Buckets with `from <= bucket start < to` (default: the last 24 h), each statistic an
    observation derived (`prov:wasDerivedFrom`) from the SensorThings URL of exactly its raw
    readings and made with the aggregation procedure (`sosa:usedProcedure`)."""
    lvl = rollups.BY_NAME.get(level)
    if lvl is None:
        raise not_found(f"no rollup level {level!r}; the levels are: {', '.join(rollups.BY_NAME)}")
    stats = [s.strip() for s in stat.split(",")] if stat else list(documents.STATISTICS)
    bad = [s for s in stats if s not in documents.STATISTICS]
    if bad or not stats:
        raise bad_request(f"unknown statistic(s) {bad}; use: {', '.join(documents.STATISTICS)}")
    iris = documents.Iris(_base(request, settings.api_public_url))
    start, end = _range(from_, to)
    n = _limit(limit, 100, 1000)
    async with database.connection() as conn:
        sensor, metric, unit = await _stream(conn, caller, ds_id)
        cur = await conn.execute(
            "SELECT series_id FROM series WHERE sensor_id = %s AND metric = %s",
            (sensor["sensor_id"], metric),
        )
        series = await cur.fetchone()
        rows = await rollups.buckets(conn, lvl, series[0], start, end, n + 1) if series else []
    next_page = None
    if len(rows) > n:
        rows = rows[:n]
        params = {
            "from": rfc3339_utc(rows[-1]["start"] + timedelta(microseconds=1)),
            "to": rfc3339_utc(end),
            "stat": ",".join(stats),
            "limit": str(n),
        }
        next_page = f"{iris.datastream(ds_id)}/rollups/{level}?{urlencode(params)}"
    members = [
        node
        for b in rows
        for node in documents.rollup_nodes(iris, sensor, metric, unit, level, b, stats)
    ]
    return _ld(documents.rollups_doc(iris, sensor, metric, level, members, next_page))

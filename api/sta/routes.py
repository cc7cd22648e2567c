"""The SensorThings API v1.1 at ``/sta/v1.1``: the service root with the conformance classes
meetnet implements, every GET resource path, and the creation of Observations.

Access rules are the registry's (``api/auth.py``, ``store.access.visible_sensors``): the same
key, the same anonymous open-data reads, the same invisibility of other municipalities'
private sensors (absent from lists and counts, 404 by id).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
from fastapi import APIRouter, Request, Response

from api.auth import Caller
from api.deps import DatabaseDep, SettingsDep
from api.producer import ReadingsProducer
from api.sta import create, engine, paths, query
from api.sta.errors import StaError, bad_request
from api.sta.model import ENTITY_SETS, OBSERVATION
from meetnet.settings import Settings

router = APIRouter(tags=["SensorThings API"])

ROOT = "/sta/v1.1"
REQ = "http://www.opengis.net/spec/iot_sensing/1.1/req/"
# Exactly what tests/sta/ checks; see README "SensorThings API and linked data".
CONFORMANCE = [
    REQ + "datamodel",
    REQ + "resource-path/resource-path-to-entities",
    REQ + "request-data",
    REQ + "create-update-delete/create-entity",
    REQ + "create-update-delete/link-to-existing-entities",
    REQ + "data-array/data-array",
]


def limits(settings: Settings) -> query.Limits:
    return query.Limits(
        default_top=min(settings.sta_default_top, settings.sta_max_top),
        max_top=settings.sta_max_top,
        max_skip=settings.sta_max_skip,
        max_depth=settings.sta_max_expand_depth,
        max_entities=settings.sta_max_entities,
    )


def base_url(request: Request, settings: Settings) -> str:
    if settings.api_public_url:
        return settings.api_public_url
    return str(request.base_url).rstrip("/")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


def _params(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in out:
            raise bad_request(f"the query option {name} appears more than once")
        out[name] = value
    return out


@router.get(ROOT, summary="SensorThings service root: entity sets and conformance classes")
async def service_root(request: Request, settings: SettingsDep, caller: Caller) -> Response:
    root = base_url(request, settings) + ROOT
    return _json(
        {
            "value": [{"name": name, "url": f"{root}/{name}"} for name in ENTITY_SETS],
            "serverSettings": {
                "conformance": CONFORMANCE,
                "meetnet": {
                    "defaultTop": limits(settings).default_top,
                    "maxTop": settings.sta_max_top,
                    "maxSkipObservations": settings.sta_max_skip,
                    "maxExpandDepth": settings.sta_max_expand_depth,
                    "maxEntitiesPerResponse": settings.sta_max_entities,
                    "maxMergedDatastreams": settings.sta_max_merge_datastreams,
                    "jsonLdContext": base_url(request, settings) + "/ld/context.jsonld",
                },
            },
        }
    )


def _req(request: Request, settings: Settings, conn: Any, caller: Any) -> engine.Req:
    return engine.Req(
        conn,
        caller,
        base_url(request, settings),
        datetime.now(UTC),
        limits(settings),
        settings.sta_max_merge_datastreams,
    )


@router.get(ROOT + "/{path:path}", summary="SensorThings resources (GET any resource path)")
async def get_resource(
    path: str, request: Request, database: DatabaseDep, settings: SettingsDep, caller: Caller
) -> Response:
    if not path:
        return await service_root(request, settings, caller)
    parsed = paths.parse(path)
    lim = limits(settings)
    opts = query.parse(_params(request), lim)
    async with database.connection() as conn:
        req = _req(request, settings, conn, caller)
        target = await engine.resolve(req, parsed)
        if target.kind == "property":
            if opts.expand or opts.select is not None:
                raise bad_request("$select and $expand do not apply to a single property")
            value, raw = await engine.property_body(req, target)
            if raw:
                if value is None:
                    return Response(status_code=204)
                text = value if isinstance(value, str) else json.dumps(value)
                return Response(text, media_type="text/plain; charset=utf-8")
            return _json(value)
        if target.kind == "entity":
            assert target.single is not None
            entity = target.single.entity
            _single_options(opts)
            query.check(entity, opts)
            query.plan(opts, lim, many=False)
            return _json(await engine.entity_body(req, target.single, opts, target.ref))
        assert target.collection is not None
        entity = target.collection.entity
        if opts.result_format is not None and entity is not OBSERVATION:
            raise bad_request("$resultFormat=dataArray applies to Observations only")
        if opts.result_format is not None and opts.expand:
            raise bad_request("$expand cannot be combined with $resultFormat=dataArray")
        query.check(entity, opts)
        query.plan(opts, lim)
        return _json(await engine.collection_body(req, target.collection, opts, target.ref))


def _single_options(opts: query.Options) -> None:
    for name, present in (
        ("$top", opts.top is not None),
        ("$skip", opts.skip != 0),
        ("$filter", opts.filter is not None),
        ("$orderby", bool(opts.orderby)),
        ("$count", opts.count),
        ("$resultFormat", opts.result_format is not None),
    ):
        if present:
            raise bad_request(f"{name} applies to collections, not to a single entity")


def _producer(request: Request) -> ReadingsProducer:
    producer: ReadingsProducer = request.app.state.readings_producer
    return producer


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the body is not valid JSON") from None


@router.post(ROOT + "/{path:path}", summary="Create Observations (the only entities created here)")
async def post_resource(
    path: str, request: Request, database: DatabaseDep, settings: SettingsDep, caller: Caller
) -> Response:
    parsed = paths.parse(path)
    segs = parsed.segments
    if parsed.value or parsed.ref:
        raise StaError(405, "POST creates entities; $value and $ref are read-only")
    if len(segs) == 1 and segs[0].name == "CreateObservations" and segs[0].key is None:
        body = await _body(request)
        async with database.connection() as conn:
            req = _req(request, settings, conn, caller)
            links, errors = await create.create_observations(
                req, settings, _producer(request), body
            )
        headers = {"X-Meetnet-Errors": json.dumps(errors[:20])} if errors else None
        return _json(links, 201, headers)
    ds_from_path = None
    if len(segs) == 1 and segs[0].name == "Observations" and segs[0].key is None:
        pass
    elif (
        len(segs) == 2
        and segs[0].name == "Datastreams"
        and segs[0].key is not None
        and segs[1].name == "Observations"
        and segs[1].key is None
    ):
        ds_from_path = segs[0].key
    else:
        raise StaError(
            405,
            "meetnet's SensorThings API creates Observations only (POST /Observations, "
            "/Datastreams('<id>')/Observations or /CreateObservations); register sensors and "
            "their types with the registry API (/v1/sensors, /v1/sensor-types)",
            {"Allow": "GET"},
        )
    body = await _body(request)
    async with database.connection() as conn:
        req = _req(request, settings, conn, caller)
        entity, location = await create.create_observation(
            req, settings, _producer(request), body, ds_from_path
        )
    return _json(entity, 201, {"Location": location})


@router.api_route(
    ROOT + "/{path:path}", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def read_only(path: str) -> Response:
    raise StaError(
        405,
        "meetnet's SensorThings API does not update or delete entities: change sensors through "
        "the registry API (/v1/sensors); readings are immutable",
        {"Allow": "GET, POST"},
    )

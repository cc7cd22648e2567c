"""Creating Observations (``POST /Observations``, ``POST /Datastreams('x')/Observations``, and
the data-array ``POST /CreateObservations``) through meetnet's ingest path.

A created Observation is a reading like one published over MQTT, with the same guarantees:

1. the body is checked here (only ``phenomenonTime``, ``result``, a ``Datastream`` link and,
   optionally, the sensor's own ``FeatureOfInterest`` link; ``result`` a finite number);
2. the registry decides: the Datastream must be visible to the caller, the caller must own
   its sensor (its municipality's key, or an admin), the sensor must not be retired; the
   Datastream's metric is one its type declares by construction;
3. the reading is validated by the gateway's own wire rules (``meetnet.wire.check_message`` on
   the device form ``{"metric", "ts", "value"}``) and its time against the processor's window;
4. it is produced to the readings topic keyed by sensor id, ``acks="all"``; **201 is answered
   only after Kafka acknowledged**. The processor stores it like any reading: a replayed POST
   is the same (series, ts) and is stored once (the first value wins).

The answer's ``Location`` is the Observation's selfLink, derived from (Datastream,
phenomenonTime); it is readable once the processor has stored it (typically well under a
second).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from api.producer import KafkaUnavailable, ReadingsProducer
from api.schemas import rfc3339_utc
from api.sta import ids
from api.sta.engine import Req
from api.sta.errors import StaError, bad_request, not_found
from api.sta.model import DATASTREAM, OBSERVATION
from meetnet import wire
from meetnet.settings import Settings

log = logging.getLogger(__name__)

ALLOWED = {
    "phenomenonTime",
    "result",
    "resultTime",
    "Datastream",
    "FeatureOfInterest",
    "resultQuality",
    "validTime",
    "parameters",
}
# The processor judges the time window with its own clock, a little later: leave it margin so
# that a reading accepted here is not dead-lettered as too old a moment later.
AGE_MARGIN = timedelta(seconds=60)
MAX_ROWS = 10_000  # rows in one CreateObservations request


@dataclass
class Stream:
    """A Datastream a caller may write: its sensor, metric and owner."""

    id: str
    sensor_id: str
    metric: str
    municipality: str
    status: str


def _link_id(value: Any, what: str) -> str:
    if not isinstance(value, dict) or set(value) != {"@iot.id"}:
        raise bad_request(
            f'{what} must be a link to an existing entity, {{"@iot.id": "..."}}; meetnet '
            "does not create Datastreams or Features of Interest through this API "
            "(register sensors with POST /v1/sensors)"
        )
    ident = value["@iot.id"]
    if not isinstance(ident, str | int) or isinstance(ident, bool):
        raise bad_request(f"{what}: @iot.id must be a string")
    return str(ident)


async def writable_stream(req: Req, ds_id: str) -> Stream:
    principal = req.principal
    ctx = req.context()
    query = sql.SQL(
        "SELECT e.id, e.sensor_id, e.metric, s.municipality, s.status FROM ({}) e"
        " JOIN sensors s ON s.sensor_id = e.sensor_id WHERE e.id = {}::text"
    ).format(ctx.source("Datastream"), ctx.param(ds_id))
    rows = await req.rows(query, ctx.params)
    if not rows:
        raise not_found(f"no Datastream with id {ids.quote(ds_id)}")
    r = rows[0]
    if principal.key_id is None and not principal.is_admin:
        raise StaError(
            401,
            "creating Observations needs the key of the sensor's municipality (or an admin "
            "key): send `Authorization: Bearer <key>`",
            {"WWW-Authenticate": 'Bearer realm="meetnet"'},
        )
    if not principal.owns(r["municipality"]):
        raise StaError(
            403,
            f"Datastream {ids.quote(ds_id)} belongs to a sensor of municipality "
            f"{r['municipality']}; only that municipality's keys and admins may add readings",
        )
    if r["status"] == "retired":
        raise StaError(409, f"sensor {r['sensor_id']!r} is retired: it takes no new readings")
    return Stream(r["id"], r["sensor_id"], r["metric"], r["municipality"], r["status"])


def _time(value: Any, now: datetime) -> datetime:
    if value is None:
        return now
    if not isinstance(value, str):
        raise bad_request("phenomenonTime must be an RFC 3339 date-time string with an offset")
    if "/" in value:
        raise bad_request(
            "phenomenonTime must be an instant: meetnet stores readings at one time, not intervals"
        )
    ts = ids.parse_timestamp(value.strip())
    if ts is None:
        raise bad_request(
            f"phenomenonTime {value!r} is not an RFC 3339 date-time with an offset "
            "(2026-11-29T19:00:00Z, 2026-11-29T20:00:00+01:00)"
        )
    return ts


def _result(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(
            "result must be a number: meetnet's Datastreams are measurements (OM_Measurement)"
        )
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        raise bad_request("result must be a finite number")
    if isinstance(value, int) and abs(value) > wire.MAX_EXACT_INT:
        raise bad_request(f"an integer result must lie within ±{wire.MAX_EXACT_INT} (2^53)")
    return value


def _check_window(ts: datetime, settings: Settings, now: datetime) -> None:
    oldest = now - timedelta(seconds=settings.max_reading_age_s) + AGE_MARGIN
    newest = now + timedelta(seconds=settings.max_clock_skew_s)
    if ts < oldest or ts > newest:
        raise bad_request(
            f"phenomenonTime {rfc3339_utc(ts)} lies outside the accepted window "
            f"[{rfc3339_utc(oldest)}, {rfc3339_utc(newest)}] (MEETNET_MAX_READING_AGE_S, "
            "MEETNET_MAX_CLOCK_SKEW_S)"
        )


def reading(
    stream: Stream, entity: dict[str, Any], settings: Settings, now: datetime
) -> tuple[datetime, float | int]:
    """(ts, value) of one Observation body; a 400 saying what to change otherwise."""
    unknown = set(entity) - ALLOWED
    if "@iot.id" in entity:
        raise bad_request(
            "an Observation's id is derived from its Datastream and phenomenonTime; leave "
            "@iot.id out"
        )
    if unknown:
        raise bad_request(
            f"unknown Observation properties: {', '.join(sorted(unknown))}; accepted: "
            + ", ".join(sorted(ALLOWED))
        )
    for name in ("resultQuality", "validTime", "parameters"):
        if entity.get(name) is not None:
            raise bad_request(f"meetnet does not store {name}; leave it out")
    ts = _time(entity.get("phenomenonTime"), now)
    if "result" not in entity:
        raise bad_request("an Observation needs a result")
    value = _result(entity["result"])
    result_time = entity.get("resultTime")
    if result_time is not None and _time(result_time, now) != ts:
        raise bad_request(
            "meetnet stores one time per reading: resultTime must be left out or equal "
            "phenomenonTime"
        )
    if "FeatureOfInterest" in entity:
        foi = _link_id(entity["FeatureOfInterest"], "FeatureOfInterest")
        if foi != stream.sensor_id:
            raise bad_request(
                f"the Feature of Interest of Datastream {ids.quote(stream.id)} is "
                f"{ids.quote(stream.sensor_id)} (its sensor's place); leave it out or link that one"
            )
    _check_window(ts, settings, now)
    return ts, value


def records(
    stream: Stream, items: list[tuple[datetime, float | int]], settings: Settings
) -> list[tuple[str, bytes]]:
    """Kafka records for readings of one sensor, through the gateway's wire validation."""
    out: list[tuple[str, bytes]] = []
    topic = f"{settings.mqtt_topic_prefix}/sensors/{stream.sensor_id}"
    step = settings.max_readings_per_message
    for i in range(0, len(items), step):
        chunk = items[i : i + step]
        payload = json.dumps(
            {
                "readings": [
                    {"metric": stream.metric, "ts": _wire_ts(ts), "value": v} for ts, v in chunk
                ]
            }
        ).encode()
        try:
            accepted = wire.check_message(
                topic,
                payload,
                prefix=settings.mqtt_topic_prefix,
                max_bytes=max(settings.max_payload_bytes, len(payload)),
                max_readings=step,
                received_ms=int(time.time() * 1000),
            )
        except wire.WireError as e:  # the checks above should have caught it
            raise bad_request(f"the reading is not valid: {e.detail}") from None
        out += [(sensor, value) for sensor, _, value in accepted.parts]
    return out


def _wire_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def produce(producer: ReadingsProducer, recs: list[tuple[str, bytes]]) -> None:
    try:
        await producer.send(recs)
    except KafkaUnavailable as e:
        log.warning("readings not acknowledged by Kafka", extra={"error": str(e)})
        raise StaError(
            503,
            "the readings could not be handed to Kafka; nothing is known to be stored: retry "
            "(a retried reading is stored once)",
            {"Retry-After": "5"},
        ) from None


async def create_observation(
    req: Req, settings: Settings, producer: ReadingsProducer, body: Any, ds_from_path: str | None
) -> tuple[dict[str, Any], str]:
    if not isinstance(body, dict):
        raise bad_request("the body must be one Observation as a JSON object")
    link = body.get("Datastream")
    if ds_from_path is not None:
        if link is not None and _link_id(link, "Datastream") != ds_from_path:
            raise bad_request("the body links another Datastream than the URL")
        ds_id = ds_from_path
    elif link is None:
        raise bad_request(
            'an Observation needs its Datastream: "Datastream": {"@iot.id": "<sensor>:<metric>"}'
        )
    else:
        ds_id = _link_id(link, "Datastream")
    stream = await writable_stream(req, ds_id)
    now = datetime.now(UTC)
    ts, value = reading(stream, body, settings, now)
    await produce(producer, records(stream, [(ts, value)], settings))
    obs_id = ids.observation_id(stream.id, ts)
    location = req.self_link(OBSERVATION, obs_id)
    log.info("observation accepted", extra={"datastream": stream.id})
    entity = {
        "@iot.id": obs_id,
        "@iot.selfLink": location,
        "phenomenonTime": rfc3339_utc(ts),
        "resultTime": None,
        "result": value,
        "Datastream@iot.navigationLink": f"{location}/Datastream",
        "FeatureOfInterest@iot.navigationLink": f"{location}/FeatureOfInterest",
    }
    return entity, location


_COMPONENTS = {"phenomenonTime", "result", "resultTime", "FeatureOfInterest/id"}


async def create_observations(
    req: Req, settings: Settings, producer: ReadingsProducer, body: Any
) -> tuple[list[str], list[dict[str, Any]]]:
    """CreateObservations (OGC 18-088 §14.5): per row the new Observation's selfLink, or
    ``"error"``; the reasons are returned separately (index, message)."""
    if not isinstance(body, list) or not body:
        raise bad_request(
            'the body is a JSON array of {"Datastream": {"@iot.id": ...}, "components": [...], '
            '"dataArray": [[...], ...]}'
        )
    total = sum(len(g.get("dataArray") or []) for g in body if isinstance(g, dict))
    if total > MAX_ROWS:
        raise bad_request(
            f"one CreateObservations request holds at most {MAX_ROWS} rows, not {total}"
        )
    now = datetime.now(UTC)
    answer: list[str] = []
    errors: list[dict[str, Any]] = []
    batches: list[tuple[Stream, list[tuple[datetime, float | int]]]] = []
    for group in body:
        if not isinstance(group, dict) or set(group) - {
            "Datastream",
            "components",
            "dataArray",
            "dataArray@iot.count",
        }:
            raise bad_request("each item needs exactly Datastream, components and dataArray")
        stream = await writable_stream(req, _link_id(group.get("Datastream"), "Datastream"))
        comps = group.get("components")
        rows = group.get("dataArray")
        if not isinstance(comps, list) or not all(isinstance(x, str) for x in comps):
            raise bad_request("components must be a list of property names")
        if set(comps) - _COMPONENTS or "result" not in comps or len(set(comps)) != len(comps):
            raise bad_request(
                "components name result and optionally phenomenonTime, resultTime, "
                "FeatureOfInterest/id, each once"
            )
        if not isinstance(rows, list):
            raise bad_request("dataArray must be a list of rows")
        items: list[tuple[datetime, float | int]] = []
        for row in rows:
            index = len(answer)
            try:
                if not isinstance(row, list) or len(row) != len(comps):
                    raise bad_request(f"a row has {len(comps)} values, in the order of components")
                entity: dict[str, Any] = {}
                for name, v in zip(comps, row, strict=True):
                    if name == "FeatureOfInterest/id":
                        entity["FeatureOfInterest"] = {"@iot.id": v}
                    else:
                        entity[name] = v
                ts, value = reading(stream, entity, settings, now)
            except StaError as e:
                answer.append("error")
                errors.append({"index": index, "message": e.message})
                continue
            items.append((ts, value))
            answer.append(req.self_link(OBSERVATION, ids.observation_id(stream.id, ts)))
        if items:
            batches.append((stream, items))
    recs = [r for stream, items in batches for r in records(stream, items, settings)]
    if recs:
        await produce(producer, recs)
    return answer, errors


__all__ = ["DATASTREAM", "create_observation", "create_observations"]

"""Raw readings of one sensor, paged with an opaque cursor."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from api.auth import Caller
from api.deps import DatabaseDep, SettingsDep
from api.errors import DATABASE_ERRORS, NOT_FOUND, invalid
from api.schemas import ReadingsPage, readings_page_json, rfc3339_utc
from meetnet.wire import MAX_EPOCH_MS, METRIC_PATTERN, SENSOR_ID_PATTERN
from store import queries, registry

router = APIRouter(tags=["readings"])

DEFAULT_SPAN = timedelta(hours=24)
MAX_SPAN = timedelta(days=366)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# RFC 3339 date-time; the offset is optional here only so that its absence gets its own message.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?P<frac>\.\d+)?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$"
)
# An unencoded '+' in a query string arrives as a space: "...T20:00:00 01:00". A space is never
# valid before an offset, so reading it as '+' cannot misread a correct timestamp.
_LOST_PLUS = re.compile(r"(:\d{2}(?:\.\d+)?) (\d{2}:\d{2})$")
_TS_FORMS = (
    "RFC 3339 with an offset (2026-11-29T19:00:00Z, or 2026-11-29T20:00:00+01:00 with the '+' "
    "URL-encoded as %2B) or integer epoch milliseconds"
)


def parse_timestamp(value: Any) -> datetime:
    """A query-string instant: RFC 3339 with an offset, or epoch milliseconds; UTC."""
    if isinstance(value, datetime):
        return value
    text = str(value).strip()
    if text.isdigit():
        ms = int(text)
        if ms > MAX_EPOCH_MS:
            raise PydanticCustomError(
                "timestamp_out_of_range", "epoch milliseconds after 9999-12-31: {ms}", {"ms": ms}
            )
        return _EPOCH + timedelta(milliseconds=ms)
    text = _LOST_PLUS.sub(r"\1+\2", text)
    m = _RFC3339.match(text)
    if m is None:
        raise PydanticCustomError("timestamp_parsing", f"not a timestamp: expected {_TS_FORMS}")
    if m["offset"] is None:
        raise PydanticCustomError(
            "timestamp_naive",
            f"timestamp has no UTC offset, so its instant is ambiguous: expected {_TS_FORMS}",
        )
    if m["frac"] is not None and len(m["frac"]) > 7:
        raise PydanticCustomError(
            "timestamp_parsing", "timestamps have at most microsecond precision (6 digits)"
        )
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError) as e:
        raise PydanticCustomError(
            "timestamp_parsing", "invalid timestamp: {error}", {"error": str(e)}
        ) from None


QueryTimestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MS},
            ],
            "description": _TS_FORMS,
        }
    ),
]


# --- cursor ---------------------------------------------------------------------------------
# A cursor is the position of the last reading returned: "1.<epoch microseconds>.<metric>",
# base64url without padding. Opaque to clients; the version prefix lets it change later.
_CURSOR_VERSION = "1"
_METRIC_RE = re.compile(METRIC_PATTERN)


def encode_cursor(position: queries.Position) -> str:
    delta = position.ts.astimezone(UTC) - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    raw = f"{_CURSOR_VERSION}.{micros}.{position.metric}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(token: str) -> queries.Position:
    """Raise ValueError unless ``token`` is a cursor this API returned."""
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        version, micros, metric = raw.decode("ascii").split(".", 2)
        if version != _CURSOR_VERSION or not micros.lstrip("-").isdigit():
            raise ValueError("bad cursor")
        if not _METRIC_RE.match(metric):
            raise ValueError("bad cursor")
        return queries.Position(_EPOCH + timedelta(microseconds=int(micros)), metric)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise ValueError("bad cursor") from None


# --- route ----------------------------------------------------------------------------------
@router.get(
    "/sensors/{sensor_id}/readings",
    response_model=ReadingsPage,
    summary="Raw readings of one sensor",
    responses={**NOT_FOUND, **DATABASE_ERRORS},
)
async def get_readings(
    database: DatabaseDep,
    settings: SettingsDep,
    caller: Caller,
    sensor_id: Annotated[
        str,
        Path(pattern=SENSOR_ID_PATTERN, description="Sensor id.", examples=["gent-air-001"]),
    ],
    metric: Annotated[
        str | None,
        Query(pattern=METRIC_PATTERN, description="Only this metric (default: all of them)."),
    ] = None,
    from_: Annotated[
        QueryTimestamp | None,
        Query(alias="from", description=f"Start, inclusive; default `to` - 24 h. {_TS_FORMS}."),
    ] = None,
    to: Annotated[
        QueryTimestamp | None,
        Query(description=f"End, exclusive; default now. {_TS_FORMS}."),
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            description="Most readings returned (default MEETNET_API_DEFAULT_LIMIT, 1000; "
            "at most MEETNET_API_MAX_LIMIT, 10000).",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="`next_cursor` of the previous page."),
    ] = None,
) -> Response:
    """Readings of `sensor_id` with `from <= ts < to`, ordered by `(ts, metric)`.

    A page holds at most `limit` readings; when more follow, `next_cursor` is set: repeat the
    request with `cursor=<next_cursor>` (same other parameters) to continue exactly after the
    last reading returned. One request spans at most 366 days.

    A private sensor's readings are served only to its municipality and admins; for anyone
    else it does not exist (404), like a sensor that is not registered.
    """
    if limit is None:
        limit = min(settings.api_default_limit, settings.api_max_limit)
    elif limit > settings.api_max_limit:
        raise invalid(
            "limit",
            f"limit must be at most {settings.api_max_limit}; page with `cursor` for more",
            limit,
            kind="less_than_equal",
        )
    end = to if to is not None else datetime.now(UTC)
    start = from_ if from_ is not None else end - DEFAULT_SPAN
    if end <= start:
        raise invalid(
            "to" if to is not None else "from",
            f"`to` ({rfc3339_utc(end)}) must be after `from` ({rfc3339_utc(start)})",
            rfc3339_utc(to if to is not None else start),
        )
    if end - start > MAX_SPAN:
        raise invalid(
            "to" if to is not None else "from",
            f"the time range spans {(end - start) / timedelta(days=1):.1f} days; one request may "
            f"span at most {MAX_SPAN.days} days",
            rfc3339_utc(to if to is not None else start),
        )
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor)
        except ValueError:
            raise invalid(
                "cursor",
                "malformed cursor: pass the `next_cursor` of a previous page unchanged",
                cursor,
            ) from None

    async with database.connection() as conn:
        # Raises NotFound (404) for an unregistered sensor or one the caller may not see.
        sensor = await registry.get_sensor(conn, caller, sensor_id)
        try:
            page = await queries.raw_readings(
                conn, sensor_id, metric=metric, start=start, end=end, limit=limit, after=after
            )
        except (queries.UnknownSensor, queries.UnknownMetric) as e:
            # A registered sensor without data yet, or without data of this metric: an empty
            # page for the metrics its type declares, a 404 naming the known ones otherwise.
            declared = await registry.type_metrics(conn, sensor["type_id"])
            if metric is None or metric in declared:
                page = queries.RawPage([], None)
            else:
                known = sorted(set(declared) | set(getattr(e, "known", [])))
                raise HTTPException(
                    status.HTTP_404_NOT_FOUND, str(queries.UnknownMetric(sensor_id, metric, known))
                ) from None
    body = readings_page_json(
        sensor_id,
        page.readings,
        encode_cursor(page.next_after) if page.next_after else None,
    )
    return Response(content=body, media_type="application/json")

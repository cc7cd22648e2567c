"""Response bodies of the query API (what /openapi.json documents)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from store.queries import RawReading


def rfc3339_utc(ts: datetime) -> str:
    """``2026-11-29T19:00:00Z`` (for messages); a fraction only when the instant has one."""
    if ts.utcoffset():
        ts = ts.astimezone(UTC)
    micro = ts.microsecond
    spec = "seconds" if micro == 0 else "milliseconds" if micro % 1000 == 0 else "microseconds"
    return ts.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


# pydantic writes an aware UTC datetime as RFC 3339 with "Z" (and 6 fractional digits when
# it has a fraction) in compiled code; the store hands out UTC datetimes.
UtcTimestamp = Annotated[
    datetime,
    Field(
        description="RFC 3339 in UTC, e.g. 2026-11-29T19:00:00Z or 2026-11-29T19:00:00.123000Z",
        examples=["2026-11-29T19:00:00Z"],
    ),
]


class Message(BaseModel):
    """Body of every error response except validation errors (422)."""

    detail: str = Field(description="What went wrong, for people.")


class Reading(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"metric": "pm25", "ts": "2026-11-29T19:00:00Z", "value": 12.5}]
        }
    )

    metric: str = Field(description="Metric name, e.g. pm25.")
    ts: UtcTimestamp
    value: float


class ReadingsPage(BaseModel):
    sensor: str = Field(description="The sensor id the readings belong to.")
    readings: list[Reading] = Field(description="Ordered by (ts, metric).")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the readings after this page; null on the last page."
    )


class _ReadingsPageBody(TypedDict):
    sensor: str
    readings: list[RawReading]
    next_cursor: str | None


_READINGS_PAGE_JSON = TypeAdapter(_ReadingsPageBody)


def readings_page_json(sensor: str, readings: list[RawReading], next_cursor: str | None) -> bytes:
    """The JSON of a :class:`ReadingsPage`, written straight from the store's rows: no model
    per reading, ~5x faster at 10,000 readings (the route's tests check the body against
    ReadingsPage)."""
    return _READINGS_PAGE_JSON.dump_json(
        {"sensor": sensor, "readings": readings, "next_cursor": next_cursor}
    )


class Health(BaseModel):
    status: Literal["ok"]
    database: str = Field(description="'ok', or the error reaching PostgreSQL.")
    kafka: str = Field(description="'ok', or the error reaching the Kafka bootstrap servers.")


class HealthProblem(BaseModel):
    """503 body of /health: the shared error shape plus the state of each component."""

    detail: str = Field(description="Which components failed, and why.")
    status: Literal["unavailable"]
    database: str
    kafka: str

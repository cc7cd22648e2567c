"""Stable ids of the SensorThings entities and their text forms.

* Things, Locations, HistoricalLocations, FeaturesOfInterest: the sensor id.
* Sensors: the sensor type id. ObservedProperties: the metric name.
* Datastreams: ``<sensor id>:<metric>`` (``gent-air-001:pm25``).
* Observations: ``<sensor id>:<metric>:<phenomenonTime>`` with the time in UTC, written like
  every meetnet timestamp (``2026-11-29T19:00:00Z``, ``...19:00:00.250Z``,
  ``...19:00:00.250001Z``). A reading is identified by (series, ts), so this id is stable,
  resolvable (``/Observations('gent-air-001:pm25:2026-11-29T19:00:00Z')``) and the same for a
  reading sent twice. Any RFC 3339 spelling of the same instant resolves too.

Neither sensor ids nor metrics contain ``:``, so the parts split unambiguously.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from psycopg import sql

from api.schemas import rfc3339_utc
from meetnet.wire import METRIC_PATTERN, SENSOR_ID_PATTERN

_SENSOR = re.compile(SENSOR_ID_PATTERN)
_METRIC = re.compile(METRIC_PATTERN)
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def datastream_id(sensor_id: str, metric: str) -> str:
    return f"{sensor_id}:{metric}"


def observation_id(ds_id: str, ts: datetime) -> str:
    return f"{ds_id}:{rfc3339_utc(ts)}"


def parse_datastream_id(text: str) -> tuple[str, str] | None:
    sensor, sep, metric = text.partition(":")
    if not sep or not _SENSOR.fullmatch(sensor) or not _METRIC.fullmatch(metric):
        return None
    return sensor, metric


def parse_timestamp(text: str) -> datetime | None:
    """RFC 3339 with an offset -> aware UTC datetime (microseconds; finer digits dropped)."""
    if not _RFC3339.match(text):
        return None
    frac = re.search(r"\.(\d+)", text)
    if frac and len(frac[1]) > 6:
        text = text.replace(frac[0], "." + frac[1][:6], 1)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def parse_observation_id(text: str) -> tuple[str, datetime] | None:
    """``<sensor>:<metric>:<RFC 3339>`` -> (datastream id, ts), None when malformed."""
    parts = text.split(":", 2)
    if len(parts) != 3:
        return None
    sensor, metric, ts_text = parts
    if not _SENSOR.fullmatch(sensor) or not _METRIC.fullmatch(metric):
        return None
    ts = parse_timestamp(ts_text)
    if ts is None:
        return None
    return datastream_id(sensor, metric), ts


def quote(ident: str) -> str:
    """The id as an OData string key literal: ``'gent-air-001'``."""
    return "'" + ident.replace("'", "''") + "'"


def ts_text_sql(ts: sql.Composable) -> sql.Composable:
    """SQL for the id's time part of a timestamptz expression (same text as rfc3339_utc)."""
    return sql.SQL(
        "(to_char({t} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') ||"
        " CASE WHEN mod(extract(microseconds FROM {t})::int8, 1000000) = 0 THEN ''"
        " WHEN mod(extract(microseconds FROM {t})::int8, 1000) = 0"
        " THEN to_char({t} AT TIME ZONE 'UTC', '.MS')"
        " ELSE to_char({t} AT TIME ZONE 'UTC', '.US') END || 'Z')"
    ).format(t=ts)

"""Alert records for the alerts Kafka topic (``meetnet.alerts.v1``): one per flag transition.

Key: the sensor id (UTF-8), so all alerts of a sensor land in one partition, in order.
Value: one JSON object (schema ``meetnet.alert.v1``)::

    {"schema": "meetnet.alert.v1", "transition": "opened", "at": "2027-01-02T04:20:00.000000Z",
     "anomaly_id": "gent-air-001/pm25/range/1798863590334773", "sensor": "gent-air-001",
     "metric": "pm25", "kind": "range", "severity": "high", "score": 0.87, "state": "open",
     "started_at": "...Z", "ended_at": null, "resolved_at": null, "first_ts": "...Z",
     "last_ts": "...Z", "n_readings": 2, "first_value": 1095.4, "peak_value": 1095.4,
     "peak_ts": "...Z", "baseline": 1000.0, "statistic": 1095.4,
     "explanation": "value 1095.4 ug/m3 is above the physical maximum 1000 ug/m3",
     "config_version": "d1-3f2a...", "series_id": 17}

``transition`` is ``opened`` or ``resolved``; ``at`` is the event time of the transition.
Times are RFC 3339 UTC with 6 fraction digits; unknown numbers are ``null``. An anomaly that
opens and resolves within one batch gives both records, ``opened`` first. Alerts are produced
after the database commit and before the offset commit, so a crash in between repeats them:
consumers deduplicate on (``anomaly_id``, ``transition``).
"""

from __future__ import annotations

import asyncio

import polars as pl
from aiokafka import AIOKafkaProducer

SCHEMA = "meetnet.alert.v1"
_FIELDS = (
    "transition", "at", "anomaly_id", "sensor", "metric", "kind", "severity", "score", "state",
    "started_at", "ended_at", "resolved_at", "first_ts", "last_ts", "n_readings",
    "first_value", "peak_value", "peak_ts", "baseline", "statistic", "explanation",
    "config_version", "series_id",
)  # fmt: skip


def encode_alerts(transitions: pl.DataFrame) -> list[tuple[bytes, bytes]]:
    """(key, value) of each transition record (``Detection.transitions``), in order."""
    if transitions.height == 0:
        return []
    out = transitions.select(
        pl.lit(SCHEMA).alias("schema"),
        *(
            pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            if transitions.schema[c] == pl.Datetime("us", "UTC")
            else (pl.col(c).fill_nan(None) if transitions.schema[c] == pl.Float64 else pl.col(c))
            for c in _FIELDS
        ),
    )
    lines = out.write_ndjson().splitlines()
    keys = transitions["sensor"].to_list()
    return [(k.encode(), line.encode()) for k, line in zip(keys, lines, strict=True)]


async def publish_alerts(producer: AIOKafkaProducer, topic: str, transitions: pl.DataFrame) -> int:
    """Produce the records and wait until the broker has them all (``acks`` of the producer)."""
    records = encode_alerts(transitions)
    futures = [await producer.send(topic, value, key=key) for key, value in records]
    await asyncio.gather(*futures)
    return len(records)

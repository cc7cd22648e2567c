"""Wire format v1: what devices and gateways publish over MQTT, and what meetnet puts on Kafka.

MQTT topics (``<prefix>`` defaults to ``meetnet/v1``)::

    <prefix>/sensors/<sensor_id>     a device publishing for itself
    <prefix>/gateways/<gateway_id>   a gateway publishing for several sensors

Device payload, single reading or batch (``sensor`` optional; when present it must equal the
topic's sensor)::

    {"metric": "pm25", "ts": "2026-11-29T19:00:00Z", "value": 12.5}
    {"readings": [{"metric": "pm25", "ts": 1795978800000, "value": 12.5},
                  {"metric": "pm10", "ts": 1795978800000, "value": 20.1}]}

Gateway payload, readings grouped per sensor::

    {"sensors": [{"sensor": "gent-air-001", "readings": [{"metric": ..., "ts": ..., "value": ...}]},
                 {"sensor": "gent-air-002", "readings": [...]}]}

``ts`` is RFC 3339 with an offset (``Z`` or ``+01:00``) or integer epoch milliseconds; meetnet
stores UTC. ``value`` is a finite JSON number (integers within +-2**53, exactly representable
as the double precision meetnet stores). Unknown fields are errors, not ignored: a typo in
a field name must not silently lose data.

Everything that fails validation is dead-lettered with one of :class:`Reason` and never
crashes a service. The validation here is done per MQTT message by pydantic-core (compiled),
with no Python per reading; the stream processor re-validates per batch with Polars.

Kafka ``meetnet.readings.v1`` record (internal, produced only by the gateway): key = sensor id,
value = NDJSON, one flat line per reading:
``{"sensor": id, "rx": received_epoch_ms, "metric": ..., "ts": ..., "value": ...}`` with ``ts``
exactly as published (RFC 3339 text or epoch-ms integer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, NotRequired

from pydantic import (
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

SENSOR_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
METRIC_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
SENSOR_ID_RE = re.compile(SENSOR_ID_PATTERN)
MAX_EPOCH_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
HARD_MAX_READINGS = 100_000
# Largest Kafka value the gateway produces. A flat line per reading repeats the sensor id and
# receive time, so a payload of many short readings can grow ~4x; values above this are split
# into several records (same key, consecutive lines). The gateway's producer batch is larger.
MAX_RECORD_BYTES = 256 * 1024


class Reason(StrEnum):
    """Machine-readable dead-letter reasons (the ``meetnet.reason`` Kafka header)."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_TOPIC = "invalid_topic"
    INVALID_SENSOR_ID = "invalid_sensor_id"
    INVALID_JSON = "invalid_json"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    NON_FINITE_VALUE = "non_finite_value"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    SENSOR_MISMATCH = "sensor_mismatch"
    INVALID_METRIC = "invalid_metric"
    EMPTY_BATCH = "empty_batch"
    TOO_MANY_READINGS = "too_many_readings"
    UNDECODABLE_RECORD = "undecodable_record"
    # Registry checks (ingest/registry.py at the gateway, stream/validate.py at the processor).
    UNKNOWN_SENSOR = "unknown_sensor"
    SENSOR_RETIRED = "sensor_retired"
    UNKNOWN_GATEWAY = "unknown_gateway"
    GATEWAY_RETIRED = "gateway_retired"
    GATEWAY_NOT_OWNER = "gateway_not_owner"
    UNKNOWN_METRIC = "unknown_metric"


SensorId = Annotated[str, Field(pattern=SENSOR_ID_PATTERN)]
Metric = Annotated[str, Field(pattern=METRIC_PATTERN)]
# RFC 3339 date-time with a mandatory offset. Checked syntactically here; the processor parses
# it (vectorized) and dead-letters calendar-impossible values such as 2026-02-30.
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
EpochMs = Annotated[StrictInt, Field(ge=0, le=MAX_EPOCH_MS)]
MAX_EXACT_INT = 2**53
Value = StrictFloat | Annotated[StrictInt, Field(ge=-MAX_EXACT_INT, le=MAX_EXACT_INT)]
Rfc3339 = Annotated[str, Field(pattern=RFC3339_PATTERN)]
Timestamp = EpochMs | Rfc3339

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


# TypedDicts rather than models: pydantic-core validates them in compiled code and builds plain
# dicts, about twice as fast as model instances (1 us per reading in a batch on this machine).
@with_config(_STRICT)
class Reading(TypedDict):
    """One value of one metric at one instant."""

    metric: Metric
    ts: Timestamp
    value: Value


@with_config(_STRICT)
class DeviceReading(TypedDict):
    sensor: NotRequired[SensorId]
    metric: Metric
    ts: Timestamp
    value: Value


@with_config(_STRICT)
class DeviceBatch(TypedDict):
    sensor: NotRequired[SensorId]
    readings: Annotated[list[Reading], Field(min_length=1, max_length=HARD_MAX_READINGS)]


@with_config(_STRICT)
class SensorGroup(TypedDict):
    sensor: SensorId
    readings: Annotated[list[Reading], Field(min_length=1, max_length=HARD_MAX_READINGS)]


@with_config(_STRICT)
class GatewayBatch(TypedDict):
    sensors: Annotated[list[SensorGroup], Field(min_length=1, max_length=HARD_MAX_READINGS)]


_DEVICE_READING = TypeAdapter(DeviceReading)
_DEVICE_BATCH = TypeAdapter(DeviceBatch)
_GATEWAY_BATCH = TypeAdapter(GatewayBatch)
_READINGS = TypeAdapter(list[Reading])
_GROUPS = TypeAdapter(list[SensorGroup])


class WireError(ValueError):
    """A message that cannot be accepted; carries the dead-letter reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Topic:
    kind: str  # "sensors" or "gateways"
    ident: str


def parse_topic(topic: str, prefix: str) -> Topic:
    """Split ``<prefix>/sensors/<id>`` or ``<prefix>/gateways/<id>``; raise WireError otherwise."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise WireError(Reason.INVALID_TOPIC, f"topic {topic!r} is not under {head!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or parts[0] not in ("sensors", "gateways"):
        raise WireError(
            Reason.INVALID_TOPIC,
            f"topic {topic!r}: expected {head}sensors/<sensor_id> or {head}gateways/<gateway_id>",
        )
    if not SENSOR_ID_RE.fullmatch(parts[1]):
        raise WireError(
            Reason.INVALID_SENSOR_ID,
            f"id {parts[1]!r} in topic: lowercase letters, digits, '-' and '_' only, 1-64 chars",
        )
    return Topic(parts[0], parts[1])


def _reason_for(err: ValidationError) -> WireError:
    errors = err.errors(include_url=False, include_input=False)
    # Choose the most specific reason: a union (ts: int | datetime) reports one error per
    # member, so look at all of them before falling back to "wrong_type".
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"])
    detail = f"{first['msg']} at '{loc or '$'}'"
    kinds = {e["type"] for e in errors}
    locs = [tuple(str(p) for p in e["loc"]) for e in errors]
    if "json_invalid" in kinds or "json_type" in kinds:
        return WireError(Reason.INVALID_JSON, f"not valid JSON: {first['msg']}")
    if first["type"] == "missing":
        return WireError(Reason.MISSING_FIELD, detail)
    if first["type"] == "extra_forbidden":
        return WireError(Reason.UNKNOWN_FIELD, f"unknown field '{loc}'")
    if "finite_number" in kinds or (
        locs[0][:1] == ("value",) and kinds & {"less_than_equal", "greater_than_equal"}
    ):
        return WireError(Reason.NON_FINITE_VALUE, "value must be a finite number (no NaN/Infinity)")
    last = locs[0][-1] if locs[0] else ""
    if first["type"] == "string_pattern_mismatch" and last == "sensor":
        return WireError(Reason.INVALID_SENSOR_ID, f"{detail}: lowercase letters, digits, '-', '_'")
    if first["type"] == "string_pattern_mismatch" and last == "metric":
        return WireError(Reason.INVALID_METRIC, detail)
    if "ts" in locs[0]:
        # ts is int | datetime: report the branch that matches what was sent.
        text = isinstance(err.errors()[0].get("input"), str)
        pick = next((e for e in errors if e["type"].startswith("string") == text), first)
        msg = "not an RFC 3339 date-time" if text else pick["msg"]
        return WireError(
            Reason.INVALID_TIMESTAMP,
            f"ts: {msg}; ts must be RFC 3339 with an offset "
            "(2026-11-29T19:00:00Z, 2026-11-29T20:00:00+01:00) or integer epoch milliseconds",
        )
    if first["type"] == "too_short":
        return WireError(Reason.EMPTY_BATCH, detail)
    if first["type"] == "too_long":
        return WireError(Reason.TOO_MANY_READINGS, detail)
    return WireError(Reason.WRONG_TYPE, detail)


def _validate(adapter: TypeAdapter[Any], payload: bytes) -> Any:
    try:
        return adapter.validate_json(payload)
    except ValidationError as e:
        raise _reason_for(e) from None


def _is_batch(payload: bytes) -> bool:
    """Cheap form check before the full parse: a batch has a top-level "readings" array."""
    return b'"readings"' in payload


@dataclass(frozen=True, slots=True)
class Accepted:
    """A validated MQTT message, split per sensor: (sensor_id, n_readings, Kafka value).

    ``kind`` and ``ident`` come from the topic (``sensors``/``gateways`` and the id in it);
    ``groups`` are a gateway message's validated sensor groups (for group-level dead letters).
    """

    parts: list[tuple[str, int, bytes]]
    # Where it came from; not part of equality (two messages with the same records are equal).
    kind: str = field(default="sensors", compare=False)
    ident: str = field(default="", compare=False)
    groups: list[SensorGroup] | None = field(default=None, compare=False)


def gateway_payload(groups: list[SensorGroup]) -> bytes:
    """A gateway batch holding just ``groups``, as validated (``ts`` as published)."""
    return b'{"sensors":' + _GROUPS.dump_json(groups) + b"}"


def check_message(
    topic: str,
    payload: bytes,
    *,
    prefix: str,
    max_bytes: int,
    max_readings: int,
    received_ms: int,
) -> Accepted:
    """Validate one MQTT message completely and build its Kafka record(s), or raise WireError."""
    if len(payload) > max_bytes:
        raise WireError(
            Reason.PAYLOAD_TOO_LARGE, f"payload is {len(payload)} bytes, the limit is {max_bytes}"
        )
    t = parse_topic(topic, prefix)
    if t.kind == "sensors":
        readings = _check_device(t.ident, payload, max_readings)
        value = encode_record(t.ident, received_ms, readings)
        return Accepted(_split(t.ident, len(readings), value), t.kind, t.ident)
    gw: GatewayBatch = _validate(_GATEWAY_BATCH, payload)
    total = sum(len(g["readings"]) for g in gw["sensors"])
    if total > max_readings:
        raise WireError(
            Reason.TOO_MANY_READINGS,
            f"{total} readings in one message, the limit is {max_readings}",
        )
    parts: list[tuple[str, int, bytes]] = []
    for g in gw["sensors"]:
        rs = g["readings"]
        parts += _split(g["sensor"], len(rs), encode_record(g["sensor"], received_ms, rs))
    return Accepted(parts, t.kind, t.ident, gw["sensors"])


def _split(sensor: str, n: int, value: bytes) -> list[tuple[str, int, bytes]]:
    """One part, or several of at most MAX_RECORD_BYTES cut at line ends (rare, large)."""
    if len(value) <= MAX_RECORD_BYTES:
        return [(sensor, n, value)]
    parts: list[tuple[str, int, bytes]] = []
    chunk: list[bytes] = []
    size = 0
    for line in value.split(b"\n"):
        if chunk and size + len(line) + 1 > MAX_RECORD_BYTES:
            parts.append((sensor, len(chunk), b"\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    parts.append((sensor, len(chunk), b"\n".join(chunk)))
    return parts


def _check_device(sensor: str, payload: bytes, max_readings: int) -> list[Reading]:
    if _is_batch(payload):
        try:
            batch: DeviceBatch = _validate(_DEVICE_BATCH, payload)
        except WireError as e:
            # "readings" may also occur inside a single reading (e.g. as a metric name):
            # a single reading that parses is a single reading.
            try:
                single = _validate(_DEVICE_READING, payload)
            except WireError:
                raise e from None
            _check_sensor(sensor, single.pop("sensor", None))
            return [single]
        _check_sensor(sensor, batch.get("sensor"))
        n = len(batch["readings"])
        if n > max_readings:
            raise WireError(
                Reason.TOO_MANY_READINGS,
                f"{n} readings in one message, the limit is {max_readings}",
            )
        return batch["readings"]
    reading: DeviceReading = _validate(_DEVICE_READING, payload)
    _check_sensor(sensor, reading.pop("sensor", None))
    return [reading]


def _check_sensor(topic_sensor: str, payload_sensor: str | None) -> None:
    if payload_sensor is not None and payload_sensor != topic_sensor:
        raise WireError(
            Reason.SENSOR_MISMATCH,
            f"payload names sensor {payload_sensor!r} but was published on the topic of "
            f"{topic_sensor!r}",
        )


def encode_record(sensor: str, received_ms: int, readings: list[Reading]) -> bytes:
    """The Kafka value for one sensor's readings: one flat JSON line per reading.

    Flat lines, because Polars parses flat NDJSON about ten times faster than nested lists.
    Built without Python per reading: pydantic-core serialises the validated readings (an
    array of flat objects), and two byte replacements split it into lines and prefix each with
    the sensor and receive time. That is safe because validated readings hold no braces in
    strings (metric and ts match patterns without them) and ``sensor`` matches the id pattern.
    """
    body = _READINGS.dump_json(readings)  # [{"metric":...,"ts":...,"value":...},...]
    head = b'{"sensor":"%s","rx":%d,' % (sensor.encode(), received_ms)
    return body[1:-1].replace(b"},{", b"}\n{").replace(b"{", head)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_epoch_ms(ts: int | str) -> int:
    """Normalise one wire timestamp (for tests and tools; the hot path does this in Polars)."""
    if isinstance(ts, int):
        return ts
    t = datetime.fromisoformat((ts[:10] + "T" + ts[11:].upper()).replace("Z", "+00:00"))
    return (t - _EPOCH) // timedelta(milliseconds=1)  # exact: no floating point


# Kafka headers of dead-letter records; the value is the original payload, byte for byte.
DLQ_REASON = "meetnet.reason"
DLQ_DETAIL = "meetnet.detail"
DLQ_SOURCE = "meetnet.source"  # mqtt topic, or kafka topic/partition/offset
DLQ_STAGE = "meetnet.stage"  # gateway | processor
DLQ_RECEIVED = "meetnet.received_ms"


def dlq_headers(
    reason: Reason, detail: str, source: str, stage: str, received_ms: int
) -> list[tuple[str, bytes]]:
    return [
        (DLQ_REASON, reason.value.encode()),
        (DLQ_DETAIL, detail.encode()),
        (DLQ_SOURCE, source.encode()),
        (DLQ_STAGE, stage.encode()),
        (DLQ_RECEIVED, str(received_ms).encode()),
    ]

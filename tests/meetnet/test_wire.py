"""Wire format v1: what the gateway accepts from MQTT and the Kafka values it builds."""

from __future__ import annotations

import json

import pytest

from meetnet.wire import (
    DLQ_DETAIL,
    DLQ_REASON,
    DLQ_RECEIVED,
    DLQ_SOURCE,
    DLQ_STAGE,
    MAX_RECORD_BYTES,
    Accepted,
    Reading,
    Reason,
    Topic,
    WireError,
    check_message,
    dlq_headers,
    encode_record,
    parse_topic,
    to_epoch_ms,
)
from stream.decode import decode

PREFIX = "meetnet/v1"
SENSOR = "gent-air-001"
SENSOR_TOPIC = f"{PREFIX}/sensors/{SENSOR}"
GATEWAY_TOPIC = f"{PREFIX}/gateways/gw-1"
RX = 1_764_442_800_123
MAX_READINGS = 10
ONE = b'{"metric":"pm25","ts":1764442800000,"value":12.5}'


def accept(
    payload: bytes,
    topic: str = SENSOR_TOPIC,
    *,
    max_bytes: int = 64 * 1024,
    max_readings: int = MAX_READINGS,
) -> Accepted:
    return check_message(
        topic,
        payload,
        prefix=PREFIX,
        max_bytes=max_bytes,
        max_readings=max_readings,
        received_ms=RX,
    )


def rejection(payload: bytes, topic: str = SENSOR_TOPIC, **kw: int) -> WireError:
    with pytest.raises(WireError) as exc:
        accept(payload, topic, **kw)
    return exc.value


def reading(metric: str = "pm25", ts: object = 1764442800000, value: object = 12.5) -> dict:
    return {"metric": metric, "ts": ts, "value": value}


def device_batch(n: int) -> bytes:
    return json.dumps({"readings": [reading(ts=1764442800000 + i) for i in range(n)]}).encode()


def gateway_batch(groups: dict[str, int]) -> bytes:
    sensors = [
        {"sensor": s, "readings": [reading(ts=1764442800000 + i) for i in range(n)]}
        for s, n in groups.items()
    ]
    return json.dumps({"sensors": sensors}).encode()


# --- payload_too_large ---------------------------------------------------------------------


def test_payload_over_max_bytes_is_rejected_as_payload_too_large() -> None:
    err = rejection(ONE, max_bytes=len(ONE) - 1)
    assert err.reason is Reason.PAYLOAD_TOO_LARGE
    assert str(len(ONE)) in err.detail


def test_payload_of_exactly_max_bytes_is_accepted() -> None:
    assert accept(ONE, max_bytes=len(ONE)).parts[0][1] == 1


def test_size_is_checked_before_the_topic() -> None:
    err = rejection(ONE, f"{PREFIX}/nonsense", max_bytes=1)
    assert err.reason is Reason.PAYLOAD_TOO_LARGE


# --- invalid_topic / invalid_sensor_id in the topic -------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        pytest.param(f"{SENSOR_TOPIC}/extra", id="extra-level"),
        pytest.param(f"other/v1/sensors/{SENSOR}", id="wrong-prefix"),
        pytest.param(f"meetnet/v2/sensors/{SENSOR}", id="wrong-version"),
        pytest.param(f"meetnet/v1sensors/{SENSOR}", id="prefix-without-separator"),
        pytest.param(f"{PREFIX}/devices/{SENSOR}", id="unknown-kind"),
        pytest.param(f"{PREFIX}/sensors", id="missing-id-level"),
    ],
)
def test_topic_outside_the_scheme_is_rejected_as_invalid_topic(topic: str) -> None:
    assert rejection(ONE, topic).reason is Reason.INVALID_TOPIC


@pytest.mark.parametrize(
    "ident",
    [
        pytest.param("Gent-air-001", id="uppercase"),
        pytest.param("-gent", id="leading-dash"),
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="65-chars"),
        pytest.param("gent.air", id="dot"),
    ],
)
def test_bad_sensor_id_in_topic_is_rejected_as_invalid_sensor_id(ident: str) -> None:
    err = rejection(ONE, f"{PREFIX}/sensors/{ident}")
    assert err.reason is Reason.INVALID_SENSOR_ID
    assert "in topic" in err.detail


def test_bad_gateway_id_in_topic_is_rejected_as_invalid_sensor_id() -> None:
    err = rejection(gateway_batch({"a": 1}), f"{PREFIX}/gateways/GW")
    assert err.reason is Reason.INVALID_SENSOR_ID


def test_sensor_id_of_64_chars_is_accepted() -> None:
    ident = "a" * 64
    assert accept(ONE, f"{PREFIX}/sensors/{ident}").parts[0][0] == ident


def test_parse_topic_splits_kind_and_id() -> None:
    assert parse_topic(SENSOR_TOPIC, PREFIX) == Topic("sensors", SENSOR)
    assert parse_topic(GATEWAY_TOPIC, PREFIX) == Topic("gateways", "gw-1")


def test_sensor_id_with_trailing_newline_in_topic_is_rejected_as_invalid_sensor_id() -> None:
    err = rejection(ONE, f"{PREFIX}/sensors/abc\n")
    assert err.reason is Reason.INVALID_SENSOR_ID


# --- invalid_sensor_id in the payload ---------------------------------------------------------


@pytest.mark.parametrize(
    "sensor",
    [
        pytest.param("gent/air", id="slash"),
        pytest.param("gent+", id="plus"),
        pytest.param("#", id="hash"),
        pytest.param("GENT-AIR-001", id="uppercase"),
        pytest.param("abc\n", id="trailing-newline"),
    ],
)
def test_bad_sensor_id_in_payload_is_rejected_as_invalid_sensor_id(sensor: str) -> None:
    payload = json.dumps({"sensor": sensor, **reading()}).encode()
    assert rejection(payload).reason is Reason.INVALID_SENSOR_ID


def test_bad_sensor_id_in_device_batch_is_rejected_as_invalid_sensor_id() -> None:
    payload = json.dumps({"sensor": "a/b", "readings": [reading()]}).encode()
    assert rejection(payload).reason is Reason.INVALID_SENSOR_ID


def test_bad_sensor_id_in_gateway_batch_is_rejected_as_invalid_sensor_id() -> None:
    payload = json.dumps(
        {
            "sensors": [
                {"sensor": "ok-1", "readings": [reading()]},
                {"sensor": "Bad", "readings": []},
            ]
        }
    ).encode()
    err = rejection(payload, GATEWAY_TOPIC)
    assert err.reason is Reason.INVALID_SENSOR_ID
    assert "sensors.1.sensor" in err.detail


# --- invalid_json ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(ONE[:-5], id="truncated"),
        pytest.param(b"\xff\xfe" + ONE, id="not-utf8-prefix"),
        pytest.param(b'{"metric":"pm\xff25","ts":1,"value":1}', id="not-utf8-in-string"),
        pytest.param(b"", id="empty"),
        pytest.param(b"{metric: 'pm25'}", id="unquoted-keys"),
    ],
)
def test_unparseable_payload_is_rejected_as_invalid_json(payload: bytes) -> None:
    assert rejection(payload).reason is Reason.INVALID_JSON


def test_unparseable_gateway_payload_is_rejected_as_invalid_json() -> None:
    assert rejection(b'{"sensors":[', GATEWAY_TOPIC).reason is Reason.INVALID_JSON


# --- wrong_type ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"metric":"pm25","ts":1,"value":"12.5"}', id="value-as-string"),
        pytest.param(b'{"metric":"pm25","ts":1,"value":true}', id="value-bool"),
        pytest.param(b'{"metric":"pm25","ts":1,"value":null}', id="value-null"),
        pytest.param(b'{"metric":5,"ts":1,"value":1}', id="metric-number"),
        pytest.param(b"[" + ONE + b"]", id="payload-array"),
        pytest.param(b'"pm25"', id="payload-string"),
        pytest.param(b'{"readings":{}}', id="readings-object"),
    ],
)
def test_value_of_the_wrong_json_type_is_rejected_as_wrong_type(payload: bytes) -> None:
    assert rejection(payload).reason is Reason.WRONG_TYPE


def test_gateway_payload_array_is_rejected_as_wrong_type() -> None:
    assert rejection(b"[]", GATEWAY_TOPIC).reason is Reason.WRONG_TYPE


# --- missing_field ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["metric", "ts", "value"])
def test_reading_without_a_required_field_is_rejected_as_missing_field(field: str) -> None:
    r = reading()
    del r[field]
    err = rejection(json.dumps(r).encode())
    assert err.reason is Reason.MISSING_FIELD
    assert field in err.detail


def test_gateway_group_without_readings_is_rejected_as_missing_field() -> None:
    err = rejection(b'{"sensors":[{"sensor":"a"}]}', GATEWAY_TOPIC)
    assert err.reason is Reason.MISSING_FIELD


# --- unknown_field ---------------------------------------------------------------------------


def test_unknown_top_level_field_is_rejected_as_unknown_field() -> None:
    err = rejection(json.dumps({**reading(), "unit": "ug/m3"}).encode())
    assert err.reason is Reason.UNKNOWN_FIELD
    assert err.detail == "unknown field 'unit'"


def test_misspelled_field_is_rejected_as_unknown_field_not_ignored() -> None:
    payload = b'{"metric":"pm25","ts":1,"value":1,"vlaue":2}'
    assert rejection(payload).reason is Reason.UNKNOWN_FIELD


def test_unknown_field_inside_a_batch_reading_is_rejected_as_unknown_field() -> None:
    payload = json.dumps({"readings": [reading(), {**reading(), "unit": "x"}]}).encode()
    err = rejection(payload)
    assert err.reason is Reason.UNKNOWN_FIELD
    assert err.detail == "unknown field 'readings.1.unit'"


def test_unknown_field_inside_a_gateway_group_is_rejected_as_unknown_field() -> None:
    payload = json.dumps(
        {"sensors": [{"sensor": "a", "readings": [reading()], "site": "gent"}]}
    ).encode()
    err = rejection(payload, GATEWAY_TOPIC)
    assert err.reason is Reason.UNKNOWN_FIELD
    assert err.detail == "unknown field 'sensors.0.site'"


def test_unknown_field_inside_a_gateway_reading_is_rejected_as_unknown_field() -> None:
    payload = json.dumps(
        {"sensors": [{"sensor": "a", "readings": [{**reading(), "q": 1}]}]}
    ).encode()
    assert rejection(payload, GATEWAY_TOPIC).reason is Reason.UNKNOWN_FIELD


# --- non_finite_value ------------------------------------------------------------------------


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
def test_non_finite_value_is_rejected_as_non_finite_value(literal: bytes) -> None:
    payload = b'{"metric":"pm25","ts":1,"value":' + literal + b"}"
    assert rejection(payload).reason is Reason.NON_FINITE_VALUE


def test_nan_inside_a_device_batch_is_rejected_as_non_finite_value() -> None:
    payload = (
        b'{"readings":[{"metric":"pm25","ts":1,"value":1},{"metric":"pm25","ts":2,"value":NaN}]}'
    )
    assert rejection(payload).reason is Reason.NON_FINITE_VALUE


def test_infinity_inside_a_gateway_batch_is_rejected_as_non_finite_value() -> None:
    payload = b'{"sensors":[{"sensor":"a","readings":[{"metric":"pm25","ts":1,"value":Infinity}]}]}'
    assert rejection(payload, GATEWAY_TOPIC).reason is Reason.NON_FINITE_VALUE


def test_largest_finite_double_is_accepted() -> None:
    payload = b'{"metric":"pm25","ts":1,"value":1.7976931348623157e308}'
    assert accept(payload).parts[0][1] == 1


def test_integer_value_beyond_float8_range_is_rejected_as_non_finite_value() -> None:
    payload = b'{"metric":"pm25","ts":1,"value":1' + b"0" * 400 + b"}"
    assert rejection(payload).reason is Reason.NON_FINITE_VALUE


# --- invalid_timestamp -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [
        pytest.param("2026-11-29T19:00:00", id="naive"),
        pytest.param("garbage", id="garbage"),
        pytest.param("2026-11-29", id="date-only"),
        pytest.param("2026-11-29T19:00:00+0100", id="offset-without-colon"),
        pytest.param("2026-11-29T19:00Z", id="no-seconds"),
        pytest.param("2026-11-29T19:00:00.1234567890Z", id="ten-fraction-digits"),
        pytest.param(-1, id="negative-epoch"),
        pytest.param(1764442800000.5, id="float-epoch"),
        pytest.param(1764442800000.0, id="integral-float-epoch"),
        pytest.param(253402300800000, id="epoch-after-9999"),
        pytest.param(None, id="null"),
        pytest.param(True, id="bool"),
    ],
)
def test_unusable_timestamp_is_rejected_as_invalid_timestamp(ts: object) -> None:
    err = rejection(json.dumps(reading(ts=ts)).encode())
    assert err.reason is Reason.INVALID_TIMESTAMP
    assert "RFC 3339" in err.detail


def test_invalid_timestamp_in_a_batch_is_rejected_as_invalid_timestamp() -> None:
    payload = json.dumps({"readings": [reading(), reading(ts="yesterday")]}).encode()
    assert rejection(payload).reason is Reason.INVALID_TIMESTAMP


def test_largest_epoch_ms_is_accepted() -> None:
    assert accept(json.dumps(reading(ts=253402300799999)).encode()).parts[0][1] == 1


def test_calendar_impossible_date_is_left_to_the_processor() -> None:
    # Documented: the gateway checks timestamp syntax only; stream.validate rejects 2026-02-30.
    assert accept(json.dumps(reading(ts="2026-02-30T00:00:00Z")).encode()).parts[0][1] == 1


# --- sensor_mismatch -------------------------------------------------------------------------


def test_single_reading_naming_another_sensor_is_rejected_as_sensor_mismatch() -> None:
    payload = json.dumps({"sensor": "other", **reading()}).encode()
    err = rejection(payload)
    assert err.reason is Reason.SENSOR_MISMATCH
    assert "'other'" in err.detail
    assert f"'{SENSOR}'" in err.detail


def test_batch_naming_another_sensor_is_rejected_as_sensor_mismatch() -> None:
    payload = json.dumps({"sensor": "other", "readings": [reading()]}).encode()
    assert rejection(payload).reason is Reason.SENSOR_MISMATCH


def test_payload_naming_its_own_sensor_is_accepted() -> None:
    assert accept(json.dumps({"sensor": SENSOR, **reading()}).encode()).parts[0][0] == SENSOR
    batch = json.dumps({"sensor": SENSOR, "readings": [reading()]}).encode()
    assert accept(batch).parts[0][:2] == (SENSOR, 1)


# --- empty_batch / too_many_readings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "topic"),
    [
        pytest.param(b'{"readings":[]}', SENSOR_TOPIC, id="device-batch"),
        pytest.param(b'{"sensors":[]}', GATEWAY_TOPIC, id="gateway-no-sensors"),
        pytest.param(b'{"sensors":[{"sensor":"a","readings":[]}]}', GATEWAY_TOPIC, id="group"),
    ],
)
def test_batch_without_readings_is_rejected_as_empty_batch(payload: bytes, topic: str) -> None:
    assert rejection(payload, topic).reason is Reason.EMPTY_BATCH


def test_device_batch_over_max_readings_is_rejected_as_too_many_readings() -> None:
    err = rejection(device_batch(MAX_READINGS + 1))
    assert err.reason is Reason.TOO_MANY_READINGS
    assert err.detail == f"{MAX_READINGS + 1} readings in one message, the limit is {MAX_READINGS}"


def test_device_batch_of_exactly_max_readings_is_accepted() -> None:
    assert accept(device_batch(MAX_READINGS)).parts[0][1] == MAX_READINGS


def test_gateway_batch_whose_total_exceeds_max_readings_is_rejected_as_too_many_readings() -> None:
    # Every group is within the limit; their sum is not.
    payload = gateway_batch({"a": MAX_READINGS, "b": 1})
    err = rejection(payload, GATEWAY_TOPIC)
    assert err.reason is Reason.TOO_MANY_READINGS
    assert str(MAX_READINGS + 1) in err.detail


def test_gateway_batch_of_exactly_max_readings_in_total_is_accepted() -> None:
    parts = accept(gateway_batch({"a": MAX_READINGS - 1, "b": 1}), GATEWAY_TOPIC).parts
    assert [(s, n) for s, n, _ in parts] == [("a", MAX_READINGS - 1), ("b", 1)]


# --- invalid_metric --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric",
    [
        pytest.param("PM25", id="uppercase"),
        pytest.param("25pm", id="leading-digit"),
        pytest.param("pm-25", id="dash"),
        pytest.param("", id="empty"),
        pytest.param("m" * 65, id="65-chars"),
    ],
)
def test_bad_metric_name_is_rejected_as_invalid_metric(metric: str) -> None:
    assert rejection(json.dumps(reading(metric=metric)).encode()).reason is Reason.INVALID_METRIC


def test_bad_metric_in_a_batch_is_rejected_as_invalid_metric() -> None:
    payload = json.dumps({"readings": [reading(), reading(metric="PM10")]}).encode()
    err = rejection(payload)
    assert err.reason is Reason.INVALID_METRIC
    assert "readings.1.metric" in err.detail


# --- accepted forms: the Kafka values --------------------------------------------------------

# Every line of a value for SENSOR received at RX starts with this.
HEAD = b'{"sensor":"gent-air-001","rx":1764442800123,'
ONE_LINE = HEAD + b'"metric":"pm25","ts":1764442800000,"value":12.5}'


def test_single_reading_with_epoch_ms_becomes_one_flat_line() -> None:
    assert accept(ONE) == Accepted(
        [
            (
                SENSOR,
                1,
                b'{"sensor":"gent-air-001","rx":1764442800123,'
                b'"metric":"pm25","ts":1764442800000,"value":12.5}',
            )
        ]
    )


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            b'{"sensor":"gent-air-001","metric":"pm25","ts":1764442800000,"value":12.5}',
            id="sensor-first",
        ),
        pytest.param(
            b'{"metric":"pm25","ts":1764442800000,"value":12.5,"sensor":"gent-air-001"}',
            id="sensor-last",
        ),
    ],
)
def test_sensor_field_of_a_single_reading_is_checked_then_left_out_of_its_line(
    payload: bytes,
) -> None:
    assert accept(payload) == Accepted([(SENSOR, 1, ONE_LINE)])


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-29T19:00:00Z",
        "2026-11-29T20:00:00+01:00",
        "2026-11-29T14:00:00-05:00",
        "2026-11-29T19:00:00.5Z",
        "2026-11-29T19:00:00.123456789+00:00",
        "2026-11-29t19:00:00z",
        "2026-11-29 19:00:00Z",
    ],
)
def test_single_reading_with_rfc3339_timestamp_keeps_it_verbatim(ts: str) -> None:
    payload = json.dumps(reading(ts=ts)).encode()
    expected = HEAD + b'"metric":"pm25","ts":"%s","value":12.5}' % ts.encode()
    assert accept(payload) == Accepted([(SENSOR, 1, expected)])


def test_fields_are_written_in_a_fixed_order_without_the_payload_whitespace() -> None:
    payload = b' { "value" : 12.5 ,\t"ts" : 1764442800000 , "metric" : "pm25" } '
    assert accept(payload) == Accepted([(SENSOR, 1, ONE_LINE)])


@pytest.mark.parametrize(
    ("literal", "written"),
    [
        pytest.param(b"-3", b"-3", id="int-stays-int"),
        pytest.param(b"0", b"0", id="zero"),
        pytest.param(b"9007199254740992", b"9007199254740992", id="2**53"),
        pytest.param(b"-9007199254740992", b"-9007199254740992", id="-2**53"),
        pytest.param(b"12.50", b"12.5", id="trailing-zero"),
        pytest.param(b"2.0", b"2.0", id="integral-float"),
        pytest.param(b"-0.0", b"-0.0", id="negative-zero"),
        pytest.param(b"1E2", b"100.0", id="exponent-float"),
        pytest.param(b"1e300", b"1e+300", id="large-float"),
        pytest.param(b"1.7976931348623157e308", b"1.7976931348623157e+308", id="max-double"),
    ],
)
def test_value_is_reserialized_from_the_validated_number(literal: bytes, written: bytes) -> None:
    payload = b'{"metric":"pm25","ts":1764442800000,"value":' + literal + b"}"
    [(_, _, value)] = accept(payload).parts
    assert value == HEAD + b'"metric":"pm25","ts":1764442800000,"value":' + written + b"}"
    assert decode([value]).readings["value"].to_list() == [float(literal)]


def test_device_batch_becomes_one_kafka_value_with_a_line_per_reading() -> None:
    payload = json.dumps(
        {"readings": [reading("pm25"), reading("pm10", "2026-11-29T19:00:00Z", 20)]}
    ).encode()
    expected = (
        HEAD + b'"metric":"pm25","ts":1764442800000,"value":12.5}\n'
        b'{"sensor":"gent-air-001","rx":1764442800123,'
        b'"metric":"pm10","ts":"2026-11-29T19:00:00Z","value":20}'
    )
    assert accept(payload) == Accepted([(SENSOR, 2, expected)])


def test_device_batch_naming_its_own_sensor_gives_the_same_value() -> None:
    readings = [reading("pm25"), reading("no2", 1764442800001, -1.5)]
    plain = accept(json.dumps({"readings": readings}).encode())
    named = accept(json.dumps({"sensor": SENSOR, "readings": readings}).encode())
    assert named == plain
    assert plain.parts[0][2].count(b'"sensor"') == 2


def test_device_batch_of_max_readings_has_one_line_each_in_published_order() -> None:
    [(_, n, value)] = accept(device_batch(MAX_READINGS)).parts
    lines = value.split(b"\n")
    assert n == len(lines) == MAX_READINGS
    assert not value.endswith(b"\n")
    assert lines == [
        HEAD + b'"metric":"pm25","ts":%d,"value":12.5}' % (1764442800000 + i)
        for i in range(MAX_READINGS)
    ]


def test_gateway_batch_is_split_into_one_kafka_value_per_sensor() -> None:
    a = [reading("pm25", 1764442800000, 1.5), reading("pm10", "2026-11-29T19:00:00+01:00", 2)]
    b = [reading("no2", 1764442801000, 0.25)]
    payload = json.dumps(
        {"sensors": [{"sensor": "a-1", "readings": a}, {"sensor": "b-2", "readings": b}]}
    )
    assert accept(payload.encode(), GATEWAY_TOPIC) == Accepted(
        [
            (
                "a-1",
                2,
                b'{"sensor":"a-1","rx":1764442800123,"metric":"pm25","ts":1764442800000,'
                b'"value":1.5}\n'
                b'{"sensor":"a-1","rx":1764442800123,"metric":"pm10",'
                b'"ts":"2026-11-29T19:00:00+01:00","value":2}',
            ),
            (
                "b-2",
                1,
                b'{"sensor":"b-2","rx":1764442800123,"metric":"no2","ts":1764442801000,'
                b'"value":0.25}',
            ),
        ]
    )


def test_gateway_group_repeating_a_sensor_gives_a_value_per_group() -> None:
    payload = json.dumps(
        {
            "sensors": [
                {"sensor": "a", "readings": [reading(ts=1)]},
                {"sensor": "a", "readings": [reading(ts=2)]},
            ]
        }
    ).encode()
    parts = accept(payload, GATEWAY_TOPIC).parts
    assert [(s, n) for s, n, _ in parts] == [("a", 1), ("a", 1)]
    assert [v.count(b"\n") for _, _, v in parts] == [0, 0]


def test_gateway_kafka_values_decode_in_the_processor() -> None:
    payload = gateway_batch({"a": 2, "b": 3})
    values = [v for _, _, v in accept(payload, GATEWAY_TOPIC).parts]
    decoded = decode(values)
    assert decoded.undecodable == []
    assert decoded.readings["rec"].to_list() == [0, 0, 1, 1, 1]
    assert decoded.readings["sensor"].to_list() == ["a", "a", "b", "b", "b"]
    assert decoded.readings["rx"].to_list() == [RX] * 5


def test_single_payload_with_newlines_becomes_one_line_that_decodes() -> None:
    payload = b'{\n  "metric": "pm25",\r\n  "ts": "2026-11-29T19:00:00Z",\n  "value": 12.5\n}\n'
    [(_, n, value)] = accept(payload).parts
    assert n == 1
    assert value == HEAD + b'"metric":"pm25","ts":"2026-11-29T19:00:00Z","value":12.5}'
    decoded = decode([value])
    assert decoded.undecodable == []
    assert decoded.readings.select("rec", "sensor", "rx", "metric", "ts", "value").rows() == [
        (0, SENSOR, RX, "pm25", "2026-11-29T19:00:00Z", 12.5)
    ]


def test_batch_payload_with_newlines_becomes_one_line_per_reading_that_decodes() -> None:
    payload = json.dumps(
        {"readings": [reading(ts=1764442800000 + i, value=i) for i in range(3)]}, indent=2
    ).replace("\n", "\r\n")
    [(_, n, value)] = accept(payload.encode()).parts
    assert n == 3
    assert b"\r" not in value
    assert value.count(b"\n") == 2
    decoded = decode([ONE_LINE, value])
    assert decoded.undecodable == []
    assert decoded.readings.select("rec", "ts", "value").rows() == [
        (0, "1764442800000", 12.5),
        (1, "1764442800000", 0.0),
        (1, "1764442800001", 1.0),
        (1, "1764442800002", 2.0),
    ]


def test_metric_named_readings_is_a_single_reading() -> None:
    expected = HEAD + b'"metric":"readings","ts":1764442800000,"value":12.5}'
    payload = json.dumps(reading(metric="readings")).encode()
    assert accept(payload) == Accepted([(SENSOR, 1, expected)])
    named = json.dumps({"sensor": SENSOR, **reading(metric="readings")}).encode()
    assert accept(named) == Accepted([(SENSOR, 1, expected)])


def test_metric_named_readings_naming_another_sensor_is_rejected_as_sensor_mismatch() -> None:
    payload = json.dumps({"sensor": "other", **reading(metric="readings")}).encode()
    assert rejection(payload).reason is Reason.SENSOR_MISMATCH


def test_batch_errors_win_over_the_single_reading_fallback() -> None:
    # "readings" appears in the payload, so it is parsed as a batch first; a broken batch must
    # report the batch's error, not the single-reading form's.
    payload = json.dumps({"readings": [reading(metric="PM")]}).encode()
    assert rejection(payload).reason is Reason.INVALID_METRIC


def test_accepted_messages_round_trip_through_decode() -> None:
    # (topic, payload) as published; what was published is read back from the payloads with
    # json, and decode must yield exactly that, in order, with ts as text or epoch-ms digits.
    messages: list[tuple[str, str | bytes]] = [
        (SENSOR_TOPIC, ONE),
        (SENSOR_TOPIC, json.dumps({"sensor": SENSOR, **reading(ts="2026-11-29t19:00:00z")})),
        (
            f"{PREFIX}/sensors/s-2",
            json.dumps(
                {"readings": [reading("pm10", 1, -3), reading("no2", "2026-11-29 19:00:00+01:00")]}
            ),
        ),
        (SENSOR_TOPIC, json.dumps(reading("readings", 253402300799999, 1.7976931348623157e308))),
        (
            SENSOR_TOPIC,
            b'{\r\n "value": 0.1,\n "ts": "2026-11-29T19:00:00.123456789Z",\n "metric": "o3"\n}\n',
        ),
        (
            GATEWAY_TOPIC,
            json.dumps(
                {
                    "sensors": [
                        {"sensor": "g-1", "readings": [reading("pm25", 7, 2**53)]},
                        {
                            "sensor": "g-2",
                            "readings": [reading(ts=i, value=i / 3) for i in range(3)],
                        },
                        {"sensor": "g-1", "readings": [reading("pm1", 8, -(2**53))]},
                    ]
                }
            ),
        ),
    ]
    published = []
    parts = []
    for i, (topic, payload) in enumerate(messages):
        raw = payload if isinstance(payload, bytes) else payload.encode()
        doc = json.loads(raw)
        if "sensors" in doc:
            groups = [(g["sensor"], g["readings"]) for g in doc["sensors"]]
        else:
            groups = [(topic.rsplit("/", 1)[1], doc.get("readings", [doc]))]
        published += [
            (s, RX + i, r["metric"], str(r["ts"]), float(r["value"]))
            for s, rs in groups
            for r in rs
        ]
        parts += check_message(
            topic,
            raw,
            prefix=PREFIX,
            max_bytes=64 * 1024,
            max_readings=MAX_READINGS,
            received_ms=RX + i,
        ).parts
    decoded = decode([value for _, _, value in parts])
    assert decoded.undecodable == []
    assert decoded.readings.select("sensor", "rx", "metric", "ts", "value").rows() == published
    assert decoded.readings["rec"].to_list() == [
        rec for rec, (_, n, _) in enumerate(parts) for _ in range(n)
    ]
    assert [s for s, _, _ in parts] == [SENSOR, SENSOR, "s-2", SENSOR, SENSOR, "g-1", "g-2", "g-1"]


def test_kafka_values_of_a_largest_accepted_message_are_split_to_fit_the_record_limit() -> None:
    # A flat line per reading repeats the sensor id and receive time: a 256 KiB payload of
    # short readings grows ~4x, so the gateway splits it into records of at most
    # MAX_RECORD_BYTES, cut at line ends, which together hold every reading exactly once.
    max_bytes = 256 * 1024  # the default MEETNET_MAX_PAYLOAD_BYTES
    short = b'{"metric":"a","ts":0,"value":1e15}'
    n = (max_bytes - len(b'{"readings":[]}') + 1) // (len(short) + 1)
    payload = b'{"readings":[' + b",".join([short] * n) + b"]}"
    assert len(payload) <= max_bytes
    parts = check_message(
        f"{PREFIX}/sensors/{'a' * 64}",
        payload,
        prefix=PREFIX,
        max_bytes=max_bytes,
        max_readings=10_000,  # the default MEETNET_MAX_READINGS_PER_MESSAGE
        received_ms=RX,
    ).parts
    assert len(parts) > 1
    assert all(len(value) <= MAX_RECORD_BYTES for _, _, value in parts)
    assert sum(count for _, count, _ in parts) == n
    decoded = decode([value for _, _, value in parts])
    assert decoded.undecodable == []
    assert decoded.readings.height == n
    assert decoded.readings["rec"].value_counts(sort=True)["count"].sum() == n


# --- to_epoch_ms / encode_record / dlq_headers -----------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-29T19:00:00Z",
        "2026-11-29T19:00:00z",
        "2026-11-29t19:00:00Z",
        "2026-11-29 19:00:00Z",
        "2026-11-29T19:00:00+00:00",
        "2026-11-29T20:00:00+01:00",
        "2026-11-29T14:00:00-05:00",
        "2026-11-30T04:30:00+09:30",
        "2026-11-29T19:00:00.000Z",
        "2026-11-29T19:00:00.000000000Z",
    ],
)
def test_rfc3339_forms_of_one_instant_have_the_same_epoch_ms(ts: str) -> None:
    assert to_epoch_ms(ts) == 1795978800000


def test_epoch_ms_passes_through_to_epoch_ms() -> None:
    assert to_epoch_ms(1795978800123) == 1795978800123


def test_to_epoch_ms_keeps_milliseconds() -> None:
    assert to_epoch_ms("2026-11-29T19:00:00.5Z") == 1795978800500
    assert to_epoch_ms("2026-11-29T19:00:00.001Z") == 1795978800001


def test_to_epoch_ms_is_exact_for_every_millisecond() -> None:
    assert to_epoch_ms("2004-04-17T19:04:30.370Z") == 1082228670370
    assert to_epoch_ms("2039-05-03T04:12:37.765Z") == 2188008757765
    assert to_epoch_ms("1969-12-31T23:59:58.977Z") == -1023


def test_encode_record_writes_one_flat_line_per_reading() -> None:
    value = encode_record(
        "s-1",
        42,
        [
            Reading(metric="pm25", ts=1, value=1.5),
            Reading(metric="no2", ts="2026-11-29T19:00:00+01:00", value=-3),
            Reading(metric="o3", ts=253402300799999, value=1e300),
        ],
    )
    assert value == (
        b'{"sensor":"s-1","rx":42,"metric":"pm25","ts":1,"value":1.5}\n'
        b'{"sensor":"s-1","rx":42,"metric":"no2","ts":"2026-11-29T19:00:00+01:00","value":-3}\n'
        b'{"sensor":"s-1","rx":42,"metric":"o3","ts":253402300799999,"value":1e+300}'
    )


def test_encode_record_of_one_reading_is_one_line_without_a_newline() -> None:
    value = encode_record(SENSOR, RX, [Reading(metric="pm25", ts=1764442800000, value=12.5)])
    assert value == ONE_LINE


def test_dlq_headers_carry_reason_detail_source_stage_and_time() -> None:
    headers = dlq_headers(Reason.EMPTY_BATCH, "détail", "mqtt:meetnet/v1/sensors/x", "gateway", 7)
    assert headers == [
        ("meetnet.reason", b"empty_batch"),
        ("meetnet.detail", "détail".encode()),
        ("meetnet.source", b"mqtt:meetnet/v1/sensors/x"),
        ("meetnet.stage", b"gateway"),
        ("meetnet.received_ms", b"7"),
    ]
    assert [name for name, _ in headers] == [
        DLQ_REASON,
        DLQ_DETAIL,
        DLQ_SOURCE,
        DLQ_STAGE,
        DLQ_RECEIVED,
    ]


def test_wire_error_message_starts_with_the_reason() -> None:
    err = rejection(b"[]")
    assert str(err).startswith("wrong_type: ")
    assert isinstance(err, ValueError)

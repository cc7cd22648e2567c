"""Kafka record values (NDJSON, one flat line per reading) -> one frame of readings."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from meetnet.wire import Reason
from stream.decode import LINE_SCHEMA, READINGS_SCHEMA, decode
from stream.validate import Limits, check

# Values as the gateway writes them: one line per reading, lines joined by "\n", no trailing
# newline, ts exactly as published (RFC 3339 text or epoch-ms integer).
ONE_LINE = b'{"sensor":"s-1","rx":100,"metric":"pm25","ts":"2026-11-29T19:00:00Z","value":1.5}'
THREE_LINES = (
    b'{"sensor":"s-3","rx":300,"metric":"pm25","ts":1764442800000,"value":2}\n'
    b'{"sensor":"s-3","rx":300,"metric":"pm10","ts":"2026-11-29T19:00:01+01:00","value":-3.25}\n'
    b'{"sensor":"s-3","rx":300,"metric":"no2","ts":1,"value":0}'
)
TWO_LINES = (
    b'{"sensor":"s-2","rx":200,"metric":"o3","ts":"2026-11-29 19:00:02z","value":4.0}\n'
    b'{"sensor":"s-2","rx":200,"metric":"o3","ts":1764442802000,"value":1e+300}'
)

ROWS_ONE = [("s-1", 100, "pm25", "2026-11-29T19:00:00Z", 1.5)]
ROWS_THREE = [
    ("s-3", 300, "pm25", "1764442800000", 2.0),
    ("s-3", 300, "pm10", "2026-11-29T19:00:01+01:00", -3.25),
    ("s-3", 300, "no2", "1", 0.0),
]
ROWS_TWO = [
    ("s-2", 200, "o3", "2026-11-29 19:00:02z", 4.0),
    ("s-2", 200, "o3", "1764442802000", 1e300),
]


def readings(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=READINGS_SCHEMA, orient="row")


def at(rec: int, rows: list[tuple]) -> list[tuple]:
    return [(rec, *row) for row in rows]


def test_readings_schema_is_rec_then_the_line_schema() -> None:
    assert list(READINGS_SCHEMA.items()) == [
        ("rec", pl.UInt32()),
        ("sensor", pl.String()),
        ("rx", pl.Int64()),
        ("metric", pl.String()),
        ("ts", pl.String()),
        ("value", pl.Float64()),
    ]
    assert list(LINE_SCHEMA) == ["sensor", "rx", "metric", "ts", "value"]


def test_records_of_one_three_and_two_lines_keep_the_record_index_of_every_line() -> None:
    out = decode([ONE_LINE, THREE_LINES, TWO_LINES, ONE_LINE, THREE_LINES])
    assert out.undecodable == []
    expected = readings(
        at(0, ROWS_ONE) + at(1, ROWS_THREE) + at(2, ROWS_TWO) + at(3, ROWS_ONE) + at(4, ROWS_THREE)
    )
    assert_frame_equal(out.readings, expected)


def test_single_record_of_several_lines_decodes_alone() -> None:
    out = decode([THREE_LINES])
    assert out.undecodable == []
    assert_frame_equal(out.readings, readings(at(0, ROWS_THREE)))


def test_epoch_ms_timestamps_arrive_as_their_digits() -> None:
    value = b'{"sensor":"a","rx":1,"metric":"m","ts":253402300799999,"value":1}'
    out = decode([value])
    assert out.readings["ts"].to_list() == ["253402300799999"]


def test_malformed_record_is_reported_and_the_good_ones_still_decode() -> None:
    out = decode([ONE_LINE, b'{"sensor":"s-9","rx":1,"metric":', THREE_LINES, b"not json"])
    assert out.undecodable == [1, 3]
    assert_frame_equal(out.readings, readings(at(0, ROWS_ONE) + at(2, ROWS_THREE)))


def test_one_malformed_line_makes_its_whole_record_undecodable() -> None:
    first, _, last = THREE_LINES.split(b"\n")
    broken = first + b'\n{"sensor":"s-3","rx":300,"metric":"pm10","ts":\n' + last
    out = decode([TWO_LINES, broken, ONE_LINE])
    assert out.undecodable == [1]
    assert_frame_equal(out.readings, readings(at(0, ROWS_TWO) + at(2, ROWS_ONE)))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"", id="empty-value"),
        pytest.param(b"[]", id="json-array"),
        pytest.param(b"[" + ONE_LINE + b"]", id="json-array-of-a-line"),
        pytest.param(b"42", id="json-number"),
        pytest.param(ONE_LINE + b"\n\n" + ONE_LINE, id="blank-line-in-the-middle"),
        pytest.param(ONE_LINE + b"\n", id="trailing-newline"),
        pytest.param(ONE_LINE[:-1] + b"\n}", id="reading-spans-two-lines"),
        pytest.param(ONE_LINE + ONE_LINE, id="two-readings-on-one-line"),
        pytest.param(
            b'{"sensor":"a","rx":"late","metric":"m","ts":1,"value":1}', id="rx-not-a-number"
        ),
        pytest.param(b"\x00\xff\xfe garbage \x81", id="garbage-bytes"),
    ],
)
def test_value_that_is_not_readings_lines_is_undecodable(bad: bytes) -> None:
    out = decode([ONE_LINE, bad, TWO_LINES])
    assert out.undecodable == [1]
    assert_frame_equal(out.readings, readings(at(0, ROWS_ONE) + at(2, ROWS_TWO)))


def test_all_bad_input_gives_no_readings_and_every_index() -> None:
    out = decode([b"x", b"", b"{", ONE_LINE + b"\n"])
    assert out.undecodable == [0, 1, 2, 3]
    assert_frame_equal(out.readings, pl.DataFrame(schema=READINGS_SCHEMA))


def test_empty_input_gives_an_empty_frame() -> None:
    out = decode([])
    assert out.undecodable == []
    assert_frame_equal(out.readings, pl.DataFrame(schema=READINGS_SCHEMA))


def test_output_schema_is_exactly_readings_schema() -> None:
    for values in (
        [ONE_LINE],
        [THREE_LINES],
        [ONE_LINE, THREE_LINES, TWO_LINES],
        [],
        [b"x"],
        [ONE_LINE, b"x"],
        [b'{"hello":"world"}'],
        [THREE_LINES, b'{"hello":"world"}'],
    ):
        assert decode(values).readings.schema == READINGS_SCHEMA


@pytest.mark.parametrize(
    ("line", "ts", "value", "reason"),
    [
        pytest.param(
            b'{"sensor":"a","rx":1,"metric":"pm25","ts":1795978800000}',
            "1795978800000",
            None,
            Reason.NON_FINITE_VALUE,
            id="no-value",
        ),
        pytest.param(
            b'{"sensor":"a","rx":1,"metric":"pm25","ts":1795978800000,"value":null}',
            "1795978800000",
            None,
            Reason.NON_FINITE_VALUE,
            id="null-value",
        ),
        pytest.param(
            b'{"sensor":"a","rx":1,"metric":"pm25","value":1.5}',
            None,
            1.5,
            Reason.INVALID_TIMESTAMP,
            id="no-ts",
        ),
    ],
)
def test_missing_value_or_ts_becomes_null_for_validation_to_judge(
    line: bytes, ts: str | None, value: float | None, reason: Reason
) -> None:
    out = decode([line])
    assert out.undecodable == []
    assert_frame_equal(out.readings, readings([(0, "a", 1, "pm25", ts, value)]))
    limits = Limits(max_age_ms=86_400_000, max_skew_ms=600_000)
    checked = check(out.readings, 1_795_978_800_000, limits)
    assert checked.ok.height == 0
    assert checked.rejects["reason"].to_list() == [reason.value]


@pytest.mark.parametrize("field", ["metric", "sensor"])
def test_line_without_metric_or_sensor_makes_its_whole_record_undecodable(field: str) -> None:
    fields = {"sensor": b'"sensor":"s-3"', "metric": b'"metric":"pm10"'}
    del fields[field]
    partial = b"{" + b",".join([*fields.values(), b'"rx":300,"ts":1,"value":1']) + b"}"
    first, _, last = THREE_LINES.split(b"\n")
    out = decode([ONE_LINE, first + b"\n" + partial + b"\n" + last, TWO_LINES])
    assert out.undecodable == [1]
    assert_frame_equal(out.readings, readings(at(0, ROWS_ONE) + at(2, ROWS_TWO)))


def test_integer_value_decodes_as_float() -> None:
    out = decode([b'{"sensor":"a","rx":1,"metric":"m","ts":1,"value":-7}'])
    assert out.readings["value"].to_list() == [-7.0]
    assert out.readings["value"].dtype == pl.Float64


def test_integer_beyond_128_bits_makes_only_its_own_record_undecodable() -> None:
    # The gateway never forwards such a value (integers are limited to +-2**53); a record from
    # another producer that holds one is reported, and its neighbours still decode.
    huge = (
        b'{"sensor":"a","rx":1,"metric":"m","ts":1,"value":2}\n'
        b'{"sensor":"a","rx":1,"metric":"m","ts":2,"value":%d}' % 10**39
    )
    fine = b'{"sensor":"b","rx":1,"metric":"m","ts":3,"value":4}'
    out = decode([fine, huge, THREE_LINES])
    assert out.undecodable == [1]
    assert out.readings["rec"].to_list() == [0, 2, 2, 2]


@pytest.mark.parametrize(
    "foreign",
    [
        pytest.param(b'{"hello":"world"}', id="unrelated-object"),
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b"null", id="json-null"),
        pytest.param(
            b'{"sensor":"s-1","rx":100,"msgs":[{"metric":"pm25","ts":1,"value":1.5}]}',
            id="previous-nested-format",
        ),
    ],
)
def test_json_that_is_not_a_readings_line_is_reported_undecodable(foreign: bytes) -> None:
    out = decode([foreign, b'{"sensor":"b","rx":1,"metric":"m","ts":3,"value":4}', foreign])
    assert out.undecodable == [0, 2]
    assert out.readings["sensor"].to_list() == ["b"]
    assert out.readings["rec"].to_list() == [1]


def test_foreign_and_malformed_records_are_reported_together_in_order() -> None:
    out = decode([b'{"hello":"world"}', THREE_LINES, b"not json", ONE_LINE])
    assert out.undecodable == [0, 2]
    assert_frame_equal(out.readings, readings(at(1, ROWS_THREE) + at(3, ROWS_ONE)))

"""Kafka record values -> one frame of readings."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from stream.decode import READINGS_SCHEMA, decode

SINGLE = (
    b'{"sensor":"s-1","rx":100,"msgs":[{"metric":"pm25","ts":"2026-11-29T19:00:00Z","value":1.5}]}'
)
BATCH = (
    b'{"sensor":"s-2","rx":200,"msgs":[{"readings":['
    b'{"metric":"pm25","ts":1764442800000,"value":2},'
    b'{"metric":"pm10","ts":"2026-11-29T19:00:01+01:00","value":-3.25}]}]}'
)
SINGLE_WITH_SENSOR = (
    b'{"sensor":"s-3","rx":300,"msgs":[{"sensor":"s-3","metric":"no2","ts":1,"value":0}]}'
)


def readings(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=READINGS_SCHEMA, orient="row")


def test_singles_and_batches_keep_record_index_sensor_and_rx() -> None:
    out = decode([SINGLE, BATCH, SINGLE_WITH_SENSOR, BATCH])
    assert out.undecodable == []
    expected = readings(
        [
            (0, "s-1", 100, "pm25", "2026-11-29T19:00:00Z", 1.5),
            (1, "s-2", 200, "pm25", "1764442800000", 2.0),
            (1, "s-2", 200, "pm10", "2026-11-29T19:00:01+01:00", -3.25),
            (2, "s-3", 300, "no2", "1", 0.0),
            (3, "s-2", 200, "pm25", "1764442800000", 2.0),
            (3, "s-2", 200, "pm10", "2026-11-29T19:00:01+01:00", -3.25),
        ]
    )
    assert_frame_equal(out.readings, expected)


def test_epoch_ms_timestamps_arrive_as_their_digits() -> None:
    out = decode([b'{"sensor":"a","rx":1,"msgs":[{"metric":"m","ts":253402300799999,"value":1}]}'])
    assert out.readings["ts"].to_list() == ["253402300799999"]


def test_malformed_record_is_reported_and_the_good_ones_still_decode() -> None:
    out = decode([SINGLE, b'{"sensor":"s-9","rx":1,"msgs":[{', BATCH, b"not json"])
    assert out.undecodable == [1, 3]
    expected = readings(
        [
            (0, "s-1", 100, "pm25", "2026-11-29T19:00:00Z", 1.5),
            (2, "s-2", 200, "pm25", "1764442800000", 2.0),
            (2, "s-2", 200, "pm10", "2026-11-29T19:00:01+01:00", -3.25),
        ]
    )
    assert_frame_equal(out.readings, expected)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"", id="empty-value"),
        pytest.param(b"[]", id="json-array"),
        pytest.param(b"42", id="json-number"),
        pytest.param(SINGLE[:-1] + b"\n}", id="spans-two-lines"),
        pytest.param(SINGLE + b"\n" + SINGLE, id="two-records-in-one-value"),
        pytest.param(b'{"sensor":"a","rx":"late","msgs":[]}', id="rx-not-a-number"),
    ],
)
def test_value_that_is_not_one_record_is_undecodable(bad: bytes) -> None:
    out = decode([SINGLE, bad])
    assert out.undecodable == [1]
    assert out.readings["rec"].to_list() == [0]


def test_all_bad_input_gives_no_readings_and_every_index() -> None:
    out = decode([b"x", b"", b"{"])
    assert out.undecodable == [0, 1, 2]
    assert_frame_equal(out.readings, pl.DataFrame(schema=READINGS_SCHEMA))


def test_empty_input_gives_an_empty_frame() -> None:
    out = decode([])
    assert out.undecodable == []
    assert_frame_equal(out.readings, pl.DataFrame(schema=READINGS_SCHEMA))


def test_record_with_empty_msgs_yields_no_rows() -> None:
    out = decode([b'{"sensor":"a","rx":1,"msgs":[]}', SINGLE])
    assert out.undecodable == []
    assert out.readings["rec"].to_list() == [1]


def test_batch_with_empty_readings_list_yields_no_rows() -> None:
    out = decode([b'{"sensor":"a","rx":1,"msgs":[{"readings":[]}]}', SINGLE])
    assert out.undecodable == []
    assert out.readings["rec"].to_list() == [1]


def test_output_schema_is_exactly_readings_schema() -> None:
    for values in ([SINGLE], [BATCH], [], [b"x"], [SINGLE, b"x"]):
        assert decode(values).readings.schema == READINGS_SCHEMA


def test_missing_fields_become_nulls_for_validation_to_judge() -> None:
    out = decode([b'{"sensor":"a","rx":1,"msgs":[{"metric":"pm25"}]}'])
    assert out.undecodable == []
    assert_frame_equal(out.readings, readings([(0, "a", 1, "pm25", None, None)]))


def test_integer_value_decodes_as_float() -> None:
    out = decode([b'{"sensor":"a","rx":1,"msgs":[{"metric":"m","ts":1,"value":-7}]}'])
    assert out.readings["value"].to_list() == [-7.0]


def test_integer_beyond_128_bits_makes_only_its_own_record_undecodable() -> None:
    # The gateway never forwards such a value (integers are limited to +-2**53); a record from
    # another producer that holds one is reported, and its neighbours still decode.
    huge = (
        b'{"sensor":"a","rx":1,"msgs":[{"readings":[{"metric":"m","ts":1,"value":2},'
        b'{"metric":"m","ts":2,"value":%d}]}]}' % 10**39
    )
    fine = b'{"sensor":"b","rx":1,"msgs":[{"metric":"m","ts":3,"value":4}]}'
    out = decode([fine, huge, fine])
    assert out.undecodable == [1]
    assert out.readings["rec"].to_list() == [0, 2]


def test_json_that_is_not_a_readings_record_is_reported_undecodable() -> None:
    out = decode(
        [b'{"hello":"world"}', b'{"sensor":"b","rx":1,"msgs":[{"metric":"m","ts":3,"value":4}]}']
    )
    assert out.undecodable == [0]
    assert out.readings["sensor"].to_list() == ["b"]

"""PostgreSQL COPY BINARY encoding of readings."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from store.copy import PG_EPOCH_US, encode_readings

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_copy_binary(data: bytes) -> list[tuple[int, int, float]]:
    """Decode COPY BINARY (series int4, ts timestamptz, value float8) by hand.

    Returns (series_id, microseconds since 2000-01-01 UTC, value) per row."""
    assert data[:11] == SIGNATURE
    flags, ext_len = struct.unpack_from(">ii", data, 11)
    assert (flags, ext_len) == (0, 0)
    pos = 19 + ext_len
    rows = []
    while True:
        (nfields,) = struct.unpack_from(">h", data, pos)
        pos += 2
        if nfields == -1:
            break
        assert nfields == 3
        fields = []
        for size, fmt in ((4, ">i"), (8, ">q"), (8, ">d")):
            (length,) = struct.unpack_from(">i", data, pos)
            assert length == size
            fields.append(struct.unpack_from(fmt, data, pos + 4)[0])
            pos += 4 + size
        rows.append((fields[0], fields[1], fields[2]))
    assert pos == len(data), "bytes after the trailer"
    return rows


def us(dt: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (no float arithmetic)."""
    return (dt - UNIX_EPOCH) // timedelta(microseconds=1)


def test_pg_epoch_is_2000_01_01_utc() -> None:
    assert us(datetime(2000, 1, 1, tzinfo=UTC)) == PG_EPOCH_US


def test_rows_round_trip_through_a_hand_written_parser() -> None:
    ts = [
        us(datetime(2026, 11, 29, 19, 0, 0, 123456, tzinfo=UTC)),
        us(datetime(2000, 1, 1, tzinfo=UTC)),
        us(datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ]
    data = encode_readings(
        np.array([1, 2_147_483_647, -5], dtype=np.int32),
        np.array(ts, dtype=np.int64),
        np.array([12.5, -0.0, -1e-300]),
    )
    rows = parse_copy_binary(data)
    assert rows == [
        (1, ts[0] - PG_EPOCH_US, 12.5),
        (2_147_483_647, 0, -0.0),
        (-5, -1, -1e-300),
    ]
    assert math.copysign(1.0, rows[1][2]) == -1.0


def test_every_row_is_34_bytes_between_19_byte_header_and_2_byte_trailer() -> None:
    data = encode_readings(np.arange(5), np.zeros(5, dtype=np.int64), np.zeros(5))
    assert len(data) == 19 + 5 * 34 + 2
    assert data[-2:] == b"\xff\xff"


def test_encoded_values_are_big_endian() -> None:
    data = encode_readings(np.array([1]), np.array([PG_EPOCH_US + 2]), np.array([1.0]))
    row = data[19:-2]
    assert row == (
        b"\x00\x03"
        + b"\x00\x00\x00\x04\x00\x00\x00\x01"
        + b"\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x02"
        + b"\x00\x00\x00\x08\x3f\xf0\x00\x00\x00\x00\x00\x00"
    )


def test_plain_python_lists_are_accepted() -> None:
    rows = parse_copy_binary(encode_readings([7], [PG_EPOCH_US + 10], [2.5]))  # type: ignore[arg-type]
    assert rows == [(7, 10, 2.5)]


def test_zero_rows_give_header_and_trailer_only() -> None:
    empty = np.array([], dtype=np.int64)
    data = encode_readings(empty, empty, np.array([], dtype=np.float64))
    assert data == SIGNATURE + b"\x00" * 8 + b"\xff\xff"
    assert parse_copy_binary(data) == []


@pytest.mark.parametrize(
    ("n_series", "n_ts", "n_value"),
    [(2, 1, 1), (1, 2, 1), (1, 1, 2), (0, 1, 0)],
)
def test_mismatched_lengths_raise_value_error(n_series: int, n_ts: int, n_value: int) -> None:
    with pytest.raises(ValueError, match="same length"):
        encode_readings(
            np.ones(n_series, dtype=np.int32),
            np.ones(n_ts, dtype=np.int64),
            np.ones(n_value),
        )


@pytest.mark.integration
def test_postgres_reads_back_the_exact_values(migrated_db: str) -> None:
    stamps = [
        datetime(2026, 11, 29, 19, 0, 0, 123456, tzinfo=UTC),
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC),
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
    ]
    series = [1, -1, 2_147_483_647, -2_147_483_648, 0, 42, 7, 8]
    values = [
        12.5,
        -273.15,
        1.7976931348623157e308,
        -1.7976931348623157e308,
        5e-324,
        -2.2250738585072014e-308,
        -0.0,
        0.1 + 0.2,
    ]
    data = encode_readings(
        np.array(series, dtype=np.int32),
        np.array([us(t) for t in stamps], dtype=np.int64),
        np.array(values, dtype=np.float64),
    )
    with psycopg.connect(migrated_db) as conn, conn.cursor() as cur:
        # Years 1 and 9999 only fit Python's datetime when the session shows them in UTC.
        cur.execute("SET TimeZone = 'UTC'")
        cur.execute("CREATE TEMP TABLE t (series_id int, ts timestamptz, value float8)")
        with cur.copy("COPY t FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data)
        cur.execute("SELECT series_id, ts, value FROM t ORDER BY series_id")
        back = cur.fetchall()
    # Bit-exact values (hex), so -0.0 and the subnormal count.
    expected = sorted(zip(series, stamps, [v.hex() for v in values], strict=True))
    assert [(s, t, v.hex()) for s, t, v in back] == expected

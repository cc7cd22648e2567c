"""PostgreSQL binary COPY encoding of whole batches with NumPy (no Python per row).

A readings row is ``(series_id int4, ts timestamptz, value float8)``. In COPY BINARY each tuple
is a big-endian int16 field count followed by (int32 length, bytes) per field, so every row of
fixed-size, non-null fields has the same layout and a NumPy structured array *is* the wire
format -- in both directions (``COPY ... TO STDOUT (FORMAT BINARY)`` is parsed the same way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from psycopg import AsyncCopy

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
# PostgreSQL timestamps count microseconds from 2000-01-01T00:00:00Z.
PG_EPOCH_US = 946_684_800_000_000

# PostgreSQL type -> NumPy big-endian field type; timestamptz is int8 µs since PG_EPOCH_US.
_PG_TYPES = {
    "bool": "?",
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float8": ">f8",
    "timestamptz": ">i8",
}


def _template(dtype: np.dtype, lengths: Sequence[int], n: int) -> np.ndarray:
    """``n`` rows with the field count and every field length already filled in: one
    broadcast copy instead of a strided write per length field."""
    one = np.zeros(1, dtype=dtype)
    one["nfields"] = len(lengths)
    for i, size in enumerate(lengths):
        one[f"len{i}"] = size
    return np.repeat(one, n)


_READINGS = np.dtype(
    [
        ("nfields", ">i2"),
        ("len0", ">i4"),
        ("f0", ">i4"),
        ("len1", ">i4"),
        ("f1", ">i8"),
        ("len2", ">i4"),
        ("f2", ">f8"),
    ]
)
assert _READINGS.itemsize == 34


def readings_rows(series_id: np.ndarray, ts_us: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The binary COPY tuples (no header, no trailer) of readings, as one structured array;
    write them with :func:`write_rows`. ``ts_us``: int64 µs since the Unix epoch (UTC)."""
    n = len(series_id)
    if not (len(ts_us) == len(value) == n):
        raise ValueError("series_id, ts_us and value must have the same length")
    rows = _template(_READINGS, (4, 8, 8), n)
    rows["f0"] = series_id
    rows["f1"] = np.subtract(ts_us, PG_EPOCH_US, dtype=np.int64)
    rows["f2"] = value
    return rows


def encode_readings(series_id: np.ndarray, ts_us: np.ndarray, value: np.ndarray) -> bytes:
    """COPY BINARY bytes (header, rows, trailer) for readings.

    ``ts_us``: int64 microseconds since the Unix epoch (UTC).
    """
    return HEADER + readings_rows(series_id, ts_us, value).tobytes() + TRAILER


async def write_rows(copy: AsyncCopy, rows: np.ndarray) -> None:
    """Send header, tuples and trailer to an open ``COPY ... FROM STDIN (FORMAT BINARY)``,
    straight from the array's memory (no joined copy of a buffer that may be large)."""
    await copy.write(HEADER)
    if len(rows):
        await copy.write(rows.view(np.uint8).data)
    await copy.write(TRAILER)


def decode_readings(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``COPY (... RETURNING series_id, ts, value) TO STDOUT (FORMAT BINARY)`` output:
    (series_id int32, ts_us int64 since the Unix epoch, value float64)."""
    if data[:11] != HEADER[:11]:
        raise ValueError("not PostgreSQL binary COPY data")
    ext = int.from_bytes(data[15:19], "big")
    body = data[19 + ext : len(data) - len(TRAILER)]
    if data[len(data) - len(TRAILER) :] != TRAILER or len(body) % _READINGS.itemsize:
        raise ValueError("truncated binary COPY data")
    rows = np.frombuffer(body, dtype=_READINGS)
    if len(rows) and not (rows["nfields"] == 3).all():
        raise ValueError("expected rows of (series_id, ts, value)")
    return (
        rows["f0"].astype(np.int32),
        rows["f1"].astype(np.int64) + PG_EPOCH_US,
        rows["f2"].astype(np.float64),
    )


def column_rows(
    columns: Sequence[tuple[str, str]], blocks: Sequence[Mapping[str, object]]
) -> np.ndarray:
    """Binary COPY tuples of fixed-size, non-null columns; write them with :func:`write_rows`.

    ``columns``: (name, PostgreSQL type) in table order. ``blocks``: consecutive groups of
    rows, each a mapping from column name to an array (or a scalar for the whole block), so
    that data kept in parts is copied once, straight into the tuples. timestamptz values are
    int64 µs since the Unix epoch.
    """
    sizes = [len(next(v for v in b.values() if isinstance(v, np.ndarray))) for b in blocks]
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    for i, (_, pg_type) in enumerate(columns):
        fields += [(f"len{i}", ">i4"), (f"f{i}", _PG_TYPES[pg_type])]
    lengths = [np.dtype(_PG_TYPES[t]).itemsize for _, t in columns]
    rows = _template(np.dtype(fields), lengths, sum(sizes))
    start = 0
    for block, size in zip(blocks, sizes, strict=True):
        part = rows[start : start + size]
        for i, (name, pg_type) in enumerate(columns):
            values = block[name]
            if pg_type == "timestamptz":
                values = np.subtract(np.asarray(values), PG_EPOCH_US, dtype=np.int64)
            part[f"f{i}"] = values
        start += size
    return rows

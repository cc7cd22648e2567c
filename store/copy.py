"""PostgreSQL binary COPY encoding of whole batches with NumPy (no Python per row).

A readings row is ``(series_id int4, ts timestamptz, value float8)``. In COPY BINARY each tuple
is a big-endian int16 field count followed by (int32 length, bytes) per field, so every row of
fixed-size, non-null fields has the same layout and a NumPy structured array *is* the wire
format -- in both directions (``COPY ... TO STDOUT (FORMAT BINARY)`` is parsed the same way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
# PostgreSQL timestamps count microseconds from 2000-01-01T00:00:00Z.
PG_EPOCH_US = 946_684_800_000_000

_ROW = np.dtype(
    [
        ("nfields", ">i2"),
        ("len_series", ">i4"),
        ("series", ">i4"),
        ("len_ts", ">i4"),
        ("ts", ">i8"),
        ("len_value", ">i4"),
        ("value", ">f8"),
    ]
)
assert _ROW.itemsize == 34

# PostgreSQL type -> NumPy big-endian field type; timestamptz is int8 µs since PG_EPOCH_US.
_PG_TYPES = {
    "bool": "?",
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float8": ">f8",
    "timestamptz": ">i8",
}


def encode_readings(series_id: np.ndarray, ts_us: np.ndarray, value: np.ndarray) -> bytes:
    """COPY BINARY bytes (header, rows, trailer) for readings.

    ``ts_us``: int64 microseconds since the Unix epoch (UTC).
    """
    n = len(series_id)
    if not (len(ts_us) == len(value) == n):
        raise ValueError("series_id, ts_us and value must have the same length")
    rows = np.empty(n, dtype=_ROW)
    rows["nfields"] = 3
    rows["len_series"] = 4
    rows["series"] = series_id
    rows["len_ts"] = 8
    rows["ts"] = np.asarray(ts_us, dtype=np.int64) - PG_EPOCH_US
    rows["len_value"] = 8
    rows["value"] = value
    return HEADER + rows.tobytes() + TRAILER


def decode_readings(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``COPY (... RETURNING series_id, ts, value) TO STDOUT (FORMAT BINARY)`` output:
    (series_id int32, ts_us int64 since the Unix epoch, value float64)."""
    if data[:11] != HEADER[:11]:
        raise ValueError("not PostgreSQL binary COPY data")
    ext = int.from_bytes(data[15:19], "big")
    body = data[19 + ext : len(data) - len(TRAILER)]
    if data[len(data) - len(TRAILER) :] != TRAILER or len(body) % _ROW.itemsize:
        raise ValueError("truncated binary COPY data")
    rows = np.frombuffer(body, dtype=_ROW)
    if len(rows) and not (rows["nfields"] == 3).all():
        raise ValueError("expected rows of (series_id, ts, value)")
    return (
        rows["series"].astype(np.int32),
        rows["ts"].astype(np.int64) + PG_EPOCH_US,
        rows["value"].astype(np.float64),
    )


def encode_columns(
    columns: Sequence[tuple[str, str]], blocks: Sequence[Mapping[str, object]]
) -> bytes:
    """COPY BINARY bytes for rows of fixed-size, non-null columns.

    ``columns``: (name, PostgreSQL type) in table order. ``blocks``: consecutive groups of
    rows, each a mapping from column name to an array (or a scalar for the whole block), so
    that data kept in parts is copied once, straight into the buffer. timestamptz values are
    int64 µs since the Unix epoch.
    """
    sizes = [len(next(v for v in b.values() if isinstance(v, np.ndarray))) for b in blocks]
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    for i, (_, pg_type) in enumerate(columns):
        fields += [(f"len{i}", ">i4"), (f"f{i}", _PG_TYPES[pg_type])]
    rows = np.empty(sum(sizes), dtype=np.dtype(fields))
    rows["nfields"] = len(columns)
    for i, (_, pg_type) in enumerate(columns):
        rows[f"len{i}"] = np.dtype(_PG_TYPES[pg_type]).itemsize
    start = 0
    for block, size in zip(blocks, sizes, strict=True):
        part = rows[start : start + size]
        for i, (name, pg_type) in enumerate(columns):
            values = block[name]
            if pg_type == "timestamptz":
                values = np.asarray(values, dtype=np.int64) - PG_EPOCH_US
            part[f"f{i}"] = values
        start += size
    return HEADER + rows.tobytes() + TRAILER

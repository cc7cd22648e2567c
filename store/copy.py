"""PostgreSQL binary COPY encoding of whole batches with NumPy (no Python per row).

A readings row is ``(series_id int4, ts timestamptz, value float8)``. In COPY BINARY each tuple
is a big-endian int16 field count followed by (int32 length, bytes) per field, so every row has
the same 34-byte layout and a NumPy structured array *is* the wire format.
"""

from __future__ import annotations

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

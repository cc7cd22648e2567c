"""Rollup deltas of a batch (pure): against a naive per-bucket reference, merge laws, DST."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from stream.rollups import (
    DELTA_SCHEMA,
    HOUR_US,
    LEVELS,
    MINUTE_US,
    Rows,
    deltas,
    local_day_start,
    merge,
    sort_unique,
)

BRUSSELS = ZoneInfo("Europe/Brussels")
UNIX = datetime(1970, 1, 1, tzinfo=UTC)
# Around the spring-forward night (2026-03-29: a 23-hour local day) and the fall-back night
# (2026-10-25: a 25-hour local day).
SPRING = int((datetime(2026, 3, 28, 12, tzinfo=UTC) - UNIX).total_seconds()) * 1_000_000
FALL = int((datetime(2026, 10, 24, 12, tzinfo=UTC) - UNIX).total_seconds()) * 1_000_000


def _us(dt: datetime) -> int:
    return (dt - UNIX) // timedelta(microseconds=1)


def _local_midnight(ts_us: int) -> int:
    local = datetime.fromtimestamp(ts_us / 1e6, BRUSSELS)
    return _us(datetime(local.year, local.month, local.day, tzinfo=BRUSSELS))


def reference(series: list[int], ts: list[int], values: list[float]) -> pl.DataFrame:
    """The rollups computed the obvious way, one bucket at a time in Python."""
    seen: dict[tuple[int, int], float] = {}
    for s, t, v in zip(series, ts, values, strict=True):
        seen.setdefault((s, t), v)  # the first reading of a key wins
    out = []
    for level in LEVELS:
        buckets: dict[tuple[int, int], list[tuple[int, float]]] = {}
        for (s, t), v in seen.items():
            b = _local_midnight(t) if level.local else t - t % level.width_us
            buckets.setdefault((s, b), []).append((t, v))
        for (s, b), pts in sorted(buckets.items()):
            pts.sort()
            vs = [v for _, v in pts]
            mean = math.fsum(vs) / len(vs)
            out.append(
                {
                    "level": level.index,
                    "series_id": s,
                    "bucket": b,
                    "count": len(vs),
                    "sum": math.fsum(vs),
                    "mean": mean,
                    "m2": math.fsum((v - mean) ** 2 for v in vs),
                    "min": min(vs),
                    "max": max(vs),
                    "first_ts": pts[0][0],
                    "first_value": pts[0][1],
                    "last_ts": pts[-1][0],
                    "last_value": pts[-1][1],
                }
            )
    return pl.DataFrame(out, schema=DELTA_SCHEMA)


def _deltas(series: list[int], ts: list[int], values: list[float]) -> pl.DataFrame:
    return deltas(sort_unique(np.array(series), np.array(ts), np.array(values))).frame()


def _assert_close(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert_frame_equal(got, want, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


readings_st = st.lists(
    st.tuples(
        st.integers(1, 4),  # series
        st.integers(-3 * HOUR_US, 50 * HOUR_US),  # offset from a DST change: crosses it
        st.floats(-1e4, 1e4, allow_nan=False),
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(readings_st, st.sampled_from([SPRING, FALL]), st.booleans())
def test_deltas_equal_a_per_bucket_reference_at_every_level(
    rs: list[tuple[int, int, float]], base: int, coarse_ts: bool
) -> None:
    series = [s for s, _, _ in rs]
    # Coarse timestamps (whole minutes) make duplicates and multi-reading buckets likely.
    ts = [base + (o - o % MINUTE_US if coarse_ts else o) for _, o, _ in rs]
    values = [v for _, _, v in rs]
    _assert_close(_deltas(series, ts, values), reference(series, ts, values))


@settings(max_examples=100, deadline=None)
@given(readings_st, st.integers(0, 300))
def test_merging_the_deltas_of_two_parts_equals_the_deltas_of_the_whole(
    rs: list[tuple[int, int, float]], cut: int
) -> None:
    # Distinct keys, as in the database: a reading is inserted once.
    rows = {(s, SPRING + o): v for s, o, v in rs}
    keys = list(rows)
    a, b = keys[:cut], keys[cut:]

    def part(ks: list[tuple[int, int]]) -> pl.DataFrame:
        return _deltas([s for s, _ in ks], [t for _, t in ks], [rows[k] for k in ks])

    whole = part(keys)
    if a and b:
        _assert_close(merge(part(a), part(b)), whole)
    _assert_close(merge(whole, pl.DataFrame(schema=DELTA_SCHEMA)), whole)


def test_duplicate_readings_keep_the_first_in_batch_order_and_the_result_is_sorted() -> None:
    rows = sort_unique(
        np.array([2, 1, 1, 2, 1]), np.array([5, 3, 3, 1, 2]), np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    )
    assert rows.series_id.tolist() == [1, 1, 2, 2]
    assert rows.ts_us.tolist() == [2, 3, 1, 5]
    assert rows.value.tolist() == [5.0, 2.0, 4.0, 1.0]  # (1, 3) keeps 2.0, not 3.0


def test_series_ids_and_time_spans_too_wide_for_one_sort_key_take_the_lexsort_path() -> None:
    far = 200 * 365 * 24 * HOUR_US  # two centuries apart, huge series ids
    rows = sort_unique(
        np.array([2**31 - 1, 0, 2**31 - 1, 0]),
        np.array([far, 0, far, -far]),
        np.array([1.0, 2.0, 3.0, 4.0]),
    )
    assert rows.series_id.tolist() == [0, 0, 2**31 - 1]
    assert rows.ts_us.tolist() == [-far, 0, far]
    assert rows.value.tolist() == [4.0, 2.0, 1.0]


def test_local_days_have_23_and_25_hours_at_the_dst_changes() -> None:
    hours = np.arange(0, 72) * HOUR_US
    for base, lengths in ((SPRING, {23}), (FALL, {25})):
        starts = np.unique(local_day_start(base + hours))
        expected = [_local_midnight(int(t)) for t in base + hours]
        assert local_day_start(base + hours).tolist() == expected
        days = set((np.diff(starts) // HOUR_US).tolist())
        assert lengths <= days <= lengths | {24}


def test_a_million_readings_of_one_sensor_reduce_to_exact_buckets() -> None:
    n = 1_000_000
    ts = SPRING + np.arange(n, dtype=np.int64) * 100_000  # 10 per second, 27.8 hours
    values = np.sin(np.arange(n) / 1000.0) * 50 + 20
    d = deltas(sort_unique(np.full(n, 7), ts, values))
    minute = d.levels[0]
    assert len(minute["count"]) == math.ceil(n / 600)
    assert minute["count"].sum() == n
    assert (minute["count"][1:-1] == 600).all()
    for i, level in enumerate(d.levels):
        assert level["count"].sum() == n, LEVELS[i].name
        assert level["min"].min() == values.min() and level["max"].max() == values.max()
        assert level["first_ts"][0] == ts[0] and level["last_value"][-1] == values[-1]
    day = d.levels[3]
    total_mean = (day["sum"].sum()) / n
    m2 = day["m2"].sum() + (day["count"] * (day["mean"] - total_mean) ** 2).sum()
    assert m2 / n == pytest.approx(values.var(), rel=1e-9)


def test_no_readings_give_no_deltas() -> None:
    empty = Rows(np.array([], np.int32), np.array([], np.int64), np.array([], np.float64))
    assert len(deltas(empty)) == 0
    assert deltas(empty).frame().schema == DELTA_SCHEMA

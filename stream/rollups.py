"""Rollup deltas of a batch of readings, for every level at once, with NumPy (no per-row Python).

Pure: arrays in, a frame out; no clock, no database. The processor merges these deltas into the
rollup tables in the same transaction as the raw insert (``store/rollups.py``).

How: the batch is sorted once by (series, ts) -- which also drops duplicate readings, keeping
the first one in batch order, as the database does -- and then every bucket of every level is
a contiguous run of rows, because the levels nest: 1 minute in 15 minutes in 1 hour in 1 UTC
day, and 1 hour in 1 Europe/Brussels day (its UTC offset is a whole number of hours, so a local
day is a run of whole UTC hours). The 1-minute states are reduced from the rows with
``ufunc.reduceat``; each coarser level is reduced from the level below it, so the cost of the
coarser levels shrinks with every level. Bucket keys are integer arithmetic on epoch µs.

Each state is mergeable: count, sum, min, max, first and last (with their times), mean and m2
(the sum of squared deviations from the mean). Within a batch m2 is computed from deviations
(two passes over the rows), and a coarser state from finer ones as
``m2 = sum(m2_i) + sum(n_i * (mean_i - mean)^2)`` -- Chan et al.'s parallel update, which has no
catastrophic cancellation, unlike a sum of squares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

LOCAL_TZ = "Europe/Brussels"
MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US


@dataclass(frozen=True)
class Level:
    index: int  # stored in rollup_dirty.level
    name: str
    table: str
    width_us: int  # bucket width; for a local-time level, that of a standard (24 h) day
    local: bool = False  # buckets are calendar days in LOCAL_TZ (23 or 25 h on DST changes)


LEVELS: tuple[Level, ...] = (
    Level(0, "1m", "rollups_1m", MINUTE_US),
    Level(1, "15m", "rollups_15m", 15 * MINUTE_US),
    Level(2, "1h", "rollups_1h", HOUR_US),
    Level(3, "1d", "rollups_1d", DAY_US),
    Level(4, "1d_local", "rollups_1d_local", DAY_US, local=True),
)
# Which level each level is reduced from (the 1-minute level comes from the rows).
_PARENT = {1: 0, 2: 1, 3: 2, 4: 2}

DELTA_SCHEMA = pl.Schema(
    {
        "level": pl.Int16(),
        "series_id": pl.Int32(),
        "bucket": pl.Int64(),  # epoch µs of the bucket's start
        "count": pl.Int64(),
        "sum": pl.Float64(),
        "mean": pl.Float64(),
        "m2": pl.Float64(),
        "min": pl.Float64(),
        "max": pl.Float64(),
        "first_ts": pl.Int64(),
        "first_value": pl.Float64(),
        "last_ts": pl.Int64(),
        "last_value": pl.Float64(),
    }
)


@dataclass(frozen=True)
class Rows:
    """Readings sorted by (series_id, ts_us), one per (series_id, ts_us)."""

    series_id: np.ndarray  # int32
    ts_us: np.ndarray  # int64, epoch µs UTC
    value: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.ts_us)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"series_id": self.series_id, "ts_us": self.ts_us, "value": self.value},
            schema={"series_id": pl.Int32, "ts_us": pl.Int64, "value": pl.Float64},
        )


def sort_unique(series_id: np.ndarray, ts_us: np.ndarray, value: np.ndarray) -> Rows:
    """Sort readings by (series, ts); of several with the same key keep the first (batch order).

    One stable argsort of a combined int64 key when it fits (the usual case: a batch spans a
    short time), else a lexsort; skipped when the batch is already in order (a backfill).
    """
    sid = np.ascontiguousarray(series_id, dtype=np.int32)
    ts = np.ascontiguousarray(ts_us, dtype=np.int64)
    val = np.ascontiguousarray(value, dtype=np.float64)
    n = len(ts)
    if n == 0:
        return Rows(sid, ts, val)
    t0 = int(ts.min())
    span = int(ts.max()) - t0 + 1
    s0 = int(sid.min())
    if (int(sid.max()) - s0 + 1) * span < 2**62:
        key = (sid.astype(np.int64) - s0) * span + (ts - t0)
        order = None if bool((key[1:] >= key[:-1]).all()) else np.argsort(key, kind="stable")
        if order is not None:
            key = key[order]
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
    else:
        order = np.lexsort((ts, sid))  # stable
        ss, tt = sid[order], ts[order]
        new = np.empty(n, dtype=bool)
        new[0] = True
        new[1:] = (ss[1:] != ss[:-1]) | (tt[1:] != tt[:-1])
    if order is None:
        if new.all():
            return Rows(sid, ts, val)
        idx = np.flatnonzero(new)
    else:
        idx = order if new.all() else order[new]
    return Rows(sid[idx], ts[idx], val[idx])


def _runs(sid: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal (sid, key) in sorted arrays."""
    brk = np.empty(len(key), dtype=bool)
    brk[0] = True
    np.not_equal(key[1:], key[:-1], out=brk[1:])
    brk[1:] |= sid[1:] != sid[:-1]
    starts = np.flatnonzero(brk)
    lengths = np.diff(starts, append=len(key))
    return starts, lengths


def local_day_start(bucket_us: np.ndarray) -> np.ndarray:
    """Epoch µs of the start of the LOCAL_TZ calendar day of each instant (vectorized; the
    time-zone work is done once per distinct hour)."""
    hours, inverse = np.unique(bucket_us // HOUR_US, return_inverse=True)
    starts = (
        pl.Series(hours * HOUR_US)
        .cast(pl.Datetime("us", "UTC"))
        .dt.convert_time_zone(LOCAL_TZ)
        .dt.truncate("1d")
        .dt.epoch("us")
        .to_numpy()
    )
    return starts[inverse.reshape(bucket_us.shape)]


State = dict[str, np.ndarray]  # the DELTA_SCHEMA columns but level, for one level


def _from_rows(rows: Rows) -> State:
    sid, ts, val = rows.series_id, rows.ts_us, rows.value
    bucket = ts - ts % MINUTE_US
    starts, lengths = _runs(sid, bucket)
    if len(starts) == len(ts):  # one reading per minute and series: nothing to reduce
        return {
            "series_id": sid,
            "bucket": bucket,
            "count": np.ones(len(ts), dtype=np.int64),
            "sum": val,
            "mean": val,
            "m2": np.zeros(len(ts)),
            "min": val,
            "max": val,
            "first_ts": ts,
            "first_value": val,
            "last_ts": ts,
            "last_value": val,
        }
    ends = starts + lengths - 1
    total = np.add.reduceat(val, starts)
    mean = total / lengths
    dev = val - np.repeat(mean, lengths)
    return {
        "series_id": sid[starts],
        "bucket": bucket[starts],
        "count": lengths.astype(np.int64),
        "sum": total,
        "mean": mean,
        "m2": np.add.reduceat(dev * dev, starts),
        "min": np.minimum.reduceat(val, starts),
        "max": np.maximum.reduceat(val, starts),
        "first_ts": ts[starts],
        "first_value": val[starts],
        "last_ts": ts[ends],
        "last_value": val[ends],
    }


def _from_level(fine: State, level: Level) -> State:
    sid = fine["series_id"]
    if level.local:
        bucket = local_day_start(fine["bucket"])
    else:
        bucket = fine["bucket"] - fine["bucket"] % level.width_us
    starts, lengths = _runs(sid, bucket)
    if len(starts) == len(sid):  # one finer bucket per bucket: the same states
        return {**fine, "bucket": bucket}
    ends = starts + lengths - 1
    count = np.add.reduceat(fine["count"], starts)
    total = np.add.reduceat(fine["sum"], starts)
    mean = total / count
    dev = fine["mean"] - np.repeat(mean, lengths)
    return {
        "series_id": sid[starts],
        "bucket": bucket[starts],
        "count": count,
        "sum": total,
        "mean": mean,
        "m2": np.add.reduceat(fine["m2"] + fine["count"] * dev * dev, starts),
        "min": np.minimum.reduceat(fine["min"], starts),
        "max": np.maximum.reduceat(fine["max"], starts),
        "first_ts": fine["first_ts"][starts],
        "first_value": fine["first_value"][starts],
        "last_ts": fine["last_ts"][ends],
        "last_value": fine["last_value"][ends],
    }


@dataclass(frozen=True)
class Deltas:
    """The rollup state of a batch in every bucket of every level: ``levels[i]`` holds the
    columns of level ``LEVELS[i]``, ordered by (series_id, bucket). Kept per level, unjoined:
    the COPY encoder writes them straight into one buffer."""

    levels: tuple[State, ...]

    def __len__(self) -> int:
        return sum(len(s["series_id"]) for s in self.levels)

    def frame(self) -> pl.DataFrame:
        """All levels as one frame (DELTA_SCHEMA), ordered by (level, series_id, bucket)."""
        if not self.levels:
            return pl.DataFrame(schema=DELTA_SCHEMA)
        return pl.concat(
            [
                pl.DataFrame(state).select(
                    pl.lit(i, dtype=pl.Int16).alias("level"), *DELTA_SCHEMA.names()[1:]
                )
                for i, state in enumerate(self.levels)
            ]
        ).cast(DELTA_SCHEMA)


def deltas(rows: Rows) -> Deltas:
    """The rollup deltas of ``rows`` (sorted and unique, see :func:`sort_unique`)."""
    if len(rows) == 0:
        return Deltas(())
    states: list[State] = [_from_rows(rows)]
    for level in LEVELS[1:]:
        states.append(_from_level(states[_PARENT[level.index]], level))
    return Deltas(tuple(states))


def merge(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Merge two delta frames bucket by bucket, with the same rules as the database (for tests
    and tools; the hot path merges in SQL)."""
    both = pl.concat([a, b]).sort("level", "series_id", "bucket", "first_ts")
    n = pl.col("count").sum()
    mean = pl.col("sum").sum() / n
    return both.group_by("level", "series_id", "bucket", maintain_order=True).agg(
        n.alias("count"),
        pl.col("sum").sum(),
        mean.alias("mean"),
        (pl.col("m2").sum() + (pl.col("count") * (pl.col("mean") - mean) ** 2).sum()).alias("m2"),
        pl.col("min").min(),
        pl.col("max").max(),
        pl.col("first_ts").min(),
        pl.col("first_value").get(pl.col("first_ts").arg_min()),
        pl.col("last_ts").max(),
        pl.col("last_value").get(pl.col("last_ts").arg_max()),
    )

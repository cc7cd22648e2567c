"""``meetnet detect``: the streaming detector over one series from a CSV file, for backtests.

Input: a CSV file with a header and at least the columns ``timestamp`` and ``value`` (other
columns are kept as they are). ``timestamp`` is RFC 3339 with an offset
(``2026-11-29T19:00:00Z``, ``2026-11-29T20:00:00.5+01:00``; ``T`` or a space) or a number of
epoch seconds or milliseconds: numbers below 10^11 (before the year 5138 in seconds) are
seconds, larger ones milliseconds, decided for the whole file from its largest value. Rows
may be in any order and irregularly spaced; an empty ``value`` is a missing reading.

Output: the input rows in their order, plus ``anomaly_score`` (in [0, 1]), ``is_anomaly``
(0/1) and ``anomaly_kind``. A row is an anomaly when it is one of the readings a flag of the
detector concerns (the out-of-range readings, a spike's readings, a flat line from its first
reading, a level shift from the jump to its confirmation, a noisy block, the first reading
after a silence); its kind is the first of range, silence, flatline, spike, level_shift,
noise that applies. ``anomaly_score`` is the strongest per-reading statistic over its
threshold mapped to [0, 1) (0.5 at the threshold), raised to at least 0.5 on anomalies and
kept below 0.5 elsewhere, so ``anomaly_score >= 0.5`` is exactly ``is_anomaly``. A repeated
timestamp is used once (its first row; later rows score 0); missing values score 0.

The expected interval (for silence) is ``silence.interval_s`` of the config if given, else the
median spacing of the series.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from stream.detect.config import KINDS, DetectionConfig
from stream.detect.detector import Detection, Detector, DetectorConfig
from stream.detect.segments import I8

PRIORITY = ("range", "silence", "flatline", "spike", "level_shift", "noise")
_MS_FROM = 1e11  # epoch numbers from here on are milliseconds
_SCORE_BELOW = 0.4999
NAIVE = r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?"  # a date-time without an offset


class InputError(ValueError):
    """The CSV cannot be scored; the message says which row or column and why."""


@dataclass(frozen=True)
class Scored:
    rows: pl.DataFrame  # input rows + anomaly_score, is_anomaly, anomaly_kind
    detection: Detection
    interval_s: float


def read_csv(path: Path) -> pl.DataFrame:
    """The file's rows with every column as text (kept exactly as written)."""
    try:
        frame = pl.read_csv(path, infer_schema=False, null_values=[""])
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except pl.exceptions.NoDataError:
        raise InputError(f"{path} is empty: expected a header with timestamp,value") from None
    except pl.exceptions.ComputeError as e:
        raise InputError(f"{path} is not a readable CSV file: {e}") from None
    missing = [c for c in ("timestamp", "value") if c not in frame.columns]
    if missing:
        raise InputError(
            f"{path} has no column {' or '.join(map(repr, missing))} "
            f"(columns: {', '.join(frame.columns) or 'none'}); expected timestamp,value"
        )
    if frame.height == 0:
        raise InputError(f"{path} has a header but no rows")
    return frame


def parse_timestamps(ts: pl.Series) -> I8:
    """Epoch microseconds of each timestamp text; InputError naming the first bad row
    (1-based, counting the header as row 1 as editors do)."""
    text = ts.str.strip_chars()
    num = text.cast(pl.Float64, strict=False)
    if num.null_count() == 0:
        finite = num.is_finite()
        if not finite.all():
            bad = int(np.argmin(finite.to_numpy()))
            raise InputError(f"row {bad + 2}: timestamp {ts[bad]!r} is not a finite number")
        scale = 1e3 if float(num.abs().max()) >= _MS_FROM else 1e6  # type: ignore[arg-type]
        return np.round(num.to_numpy() * scale).astype(np.int64)
    norm = (text.str.slice(0, 10) + "T" + text.str.slice(11).str.to_uppercase()).str.replace(
        r"Z$", "+00:00"
    )
    parsed = norm.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", time_zone="UTC", strict=False, time_unit="us"
    )
    bad = parsed.is_null().to_numpy() | text.is_null().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raw = ts[i]
        naive = raw is not None and re.fullmatch(NAIVE, str(raw).strip()) is not None
        hint = " (RFC 3339 needs an offset: add Z or e.g. +01:00)" if naive else ""
        raise InputError(
            f"row {i + 2}: cannot parse timestamp {raw!r}; expected RFC 3339 with an offset "
            f"or epoch seconds/milliseconds{hint}"
        )
    return parsed.dt.epoch("us").to_numpy().astype(np.int64)


def parse_values(v: pl.Series) -> np.ndarray:
    """Float values; empty and NaN are missing (NaN). InputError names a non-number's row."""
    vals = v.str.strip_chars().cast(pl.Float64, strict=False)
    bad = vals.is_null() & v.is_not_null()
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise InputError(f"row {i + 2}: value {v[i]!r} is not a number")
    return vals.fill_null(float("nan")).to_numpy()


def _interval(ts: I8) -> float:
    t = np.unique(ts)
    if len(t) < 2:
        return 0.0
    return float(np.median(np.diff(t))) / 1e6


def score_series(
    ts_us: I8, values: np.ndarray, *, metric: str, config: DetectionConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Detection, float]:
    """Per-row score, anomaly flag and kind (input order) of one series, with the detector's
    flags. Pure: the same detector and thresholds as the stream processor."""
    rules = config.rules_for(metric)
    interval = rules.silence.interval_s or _interval(ts_us)
    reg = pl.DataFrame(
        {"sensor": ["series"], "metric": [metric], "interval_s": [interval or None],
         "series_id": [0]},
        schema_overrides={"interval_s": pl.Float64},
    )  # fmt: skip
    det = Detector(DetectorConfig(default=config))
    det.update_registry(reg)
    batch = pl.DataFrame(
        {"sensor": "series", "metric": metric, "ts_us": ts_us, "value": values, "series_id": 0},
        schema_overrides={"ts_us": pl.Int64, "value": pl.Float64, "series_id": pl.Int64},
    )
    off = det.score(batch)
    n = len(ts_us)
    score = np.zeros(n)
    score[off.order] = off.score
    _, kind_code, lo, hi = off.events
    st = ts_us[off.order]  # the scored rows (finite values) in time order
    first = np.r_[True, st[1:] != st[:-1]]  # a repeated timestamp is used once, the first row
    kind = np.full(n, -1, dtype=np.int64)
    for k in reversed([KINDS.index(p) for p in PRIORITY]):  # highest priority written last
        m = kind_code == k
        if not m.any():
            continue
        cover = np.zeros(len(st) + 1, dtype=np.int64)
        np.add.at(cover, np.searchsorted(st, lo[m], "left"), 1)
        np.add.at(cover, np.searchsorted(st, hi[m], "right"), -1)
        on = (np.cumsum(cover[:-1]) > 0) & first
        kind[off.order[on]] = k
    flagged = kind >= 0
    score = np.where(flagged, np.maximum(score, 0.5), np.minimum(score, _SCORE_BELOW))
    score = np.where(np.isfinite(values), score, 0.0)
    flagged &= np.isfinite(values)
    return np.round(score, 4), flagged.astype(np.int8), kind, off.detection, interval


def score_frame(frame: pl.DataFrame, *, metric: str, config: DetectionConfig) -> Scored:
    """The CSV rows (text columns from :func:`read_csv`) with the three result columns."""
    ts = parse_timestamps(frame["timestamp"])
    vals = parse_values(frame["value"])
    score, flag, kind, detection, interval = score_series(ts, vals, metric=metric, config=config)
    names = pl.Series("anomaly_kind", [None, *KINDS], dtype=pl.String).gather(kind + 1)
    out = frame.with_columns(
        pl.Series("anomaly_score", score), pl.Series("is_anomaly", flag), names
    )
    return Scored(out, detection, interval)


def summary(s: Scored) -> str:
    """One line for people: rows, anomalies, flags per kind."""
    flags = s.detection.flags.unique("anomaly_id", keep="last")
    per_kind = dict(flags.group_by("kind").len().iter_rows()) if flags.height else {}
    kinds = ", ".join(f"{k} {per_kind[k]}" for k in KINDS if k in per_kind) or "none"
    iv = f"{s.interval_s:g} s" if s.interval_s and math.isfinite(s.interval_s) else "unknown"
    return (
        f"{s.rows.height} rows, {int(s.rows['is_anomaly'].sum())} anomalous; "
        f"flags: {kinds}; expected interval {iv}"
    )


def flags_json(s: Scored) -> str:
    flags = s.detection.flags.unique("anomaly_id", keep="last").drop("opened", "resolved")
    return json.dumps(json.loads(flags.write_json()), indent=1)

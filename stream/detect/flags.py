"""Episodes -> the frames the rest of the platform uses: flags (one row per episode touched,
its current state, for the ``anomalies`` table) and transitions (opened / resolved, for the
alerts topic). Polars expressions over the few flags of a batch.

``anomaly_id`` is ``<sensor>/<metric>/<kind>/<started_at epoch µs>``: stable under replays and
restarts, readable, and the same as the table's key.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from stream.detect.config import KINDS
from stream.detect.episodes import Episodes
from stream.detect.state import NONE_TS, SeriesState

_TS = pl.Datetime("us", "UTC")
FLAG_SCHEMA: dict[str, pl.DataType] = {
    "anomaly_id": pl.String(),
    "series_id": pl.Int64(),
    "sensor": pl.String(),
    "metric": pl.String(),
    "kind": pl.String(),
    "severity": pl.String(),
    "score": pl.Float64(),
    "state": pl.String(),
    "started_at": _TS,
    "ended_at": _TS,
    "resolved_at": _TS,
    "first_ts": _TS,
    "last_ts": _TS,
    "n_readings": pl.Int64(),
    "first_value": pl.Float64(),
    "peak_value": pl.Float64(),
    "peak_ts": _TS,
    "baseline": pl.Float64(),
    "statistic": pl.Float64(),
    "explanation": pl.String(),
    "config_version": pl.String(),
    "opened": pl.Boolean(),
    "opened_at": _TS,
    "resolved": pl.Boolean(),
}
TRANSITION_SCHEMA: dict[str, pl.DataType] = {
    "transition": pl.String(),
    "at": _TS,
    **{k: v for k, v in FLAG_SCHEMA.items() if k not in ("opened", "opened_at", "resolved")},
}
# Severity: at least the kind's base level; raised by the peak score.
_BASE_SEVERITY = {
    "range": "high",
    "spike": "low",
    "level_shift": "medium",
    "flatline": "medium",
    "noise": "low",
    "silence": "medium",
}
_LEVEL = {"low": 0, "medium": 1, "high": 2}


def _num(v: float) -> str:
    """A value for people: 5 significant digits, no trailing zeros."""
    if v != v:  # NaN
        return "?"
    return f"{v:.5g}"


def _dur(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def explain(
    kind: str, n: int, span_s: float, peak: float, base: float, stat: float, first: float,
    unit: str, interval_s: float,
) -> str:  # fmt: skip
    """The human-readable explanation of one flag."""
    u = f" {unit}" if unit else ""
    span = f" ({n} readings over {_dur(span_s)})" if n > 1 else ""
    if kind == "range":
        where, bound = ("above", "maximum") if peak > base else ("below", "minimum")
        return f"value {_num(peak)}{u} is {where} the physical {bound} {_num(base)}{u}{span}"
    if kind == "spike":
        return (
            f"spike to {_num(peak)}{u} against a baseline of {_num(base)}{u} "
            f"({stat:+.1f} robust SD), {n} reading(s)"
        )
    if kind == "level_shift":
        return (
            f"level shift: the level moved {stat:+.1f} robust SD from {_num(base)}{u} to "
            f"{_num(peak)}{u}{span}"
        )
    if kind == "flatline":
        return f"stuck at {_num(first)}{u} for {n} readings ({_dur(span_s)})"
    if kind == "noise":
        return f"noise {stat:.1f}x the usual level of this series{span}"
    return (
        f"no reading for {_dur(stat)} after {_num(first)}{u} "
        f"(expected every {_dur(interval_s)}; silent after {_dur(base)})"
    )


def _severity(kind: np.ndarray, score: np.ndarray) -> list[str]:
    base = np.asarray([_LEVEL[_BASE_SEVERITY[k]] for k in KINDS])[kind]
    level = np.maximum(base, np.where(score >= 0.95, 2, np.where(score >= 0.8, 1, 0)))
    return [("low", "medium", "high")[v] for v in level.tolist()]


def _ts(us: np.ndarray) -> pl.Series:
    s = pl.Series(us, dtype=pl.Int64)
    return s.set(pl.Series(us == NONE_TS), None).cast(_TS)


def build_flags(st: SeriesState, ep: Episodes) -> pl.DataFrame:
    """One row per episode touched (a later row of the same anomaly supersedes an earlier
    one). Flags are few per batch (one per series and kind at most), so names and
    explanations are made with one Python step per flag."""
    if ep.size == 0:
        return pl.DataFrame(schema=FLAG_SCHEMA)
    sid = ep.sid.tolist()
    kinds = [KINDS[k] for k in ep.kind.tolist()]
    sensors = [st.sensors[i] for i in sid]
    metrics = [st.metrics[i] for i in sid]
    cfg = st.cfg[ep.sid]
    versions = [st.versions[c] if c < len(st.versions) else "?" for c in cfg.tolist()]
    interval = (st.interval_us[ep.sid] / 1e6).tolist()
    span = ((ep.last - ep.start) / 1e6).tolist()
    text = [
        explain(k, nn, sp, px, pb, s_, fx, st.units[i], iv)
        for k, nn, sp, px, pb, s_, fx, i, iv in zip(
            kinds, ep.n.tolist(), span, ep.x.tolist(), ep.base.tolist(), ep.stat.tolist(),
            ep.first_x.tolist(), sid, interval, strict=True,
        )
    ]  # fmt: skip
    ids = [
        f"{s_}/{m}/{k}/{t}"
        for s_, m, k, t in zip(sensors, metrics, kinds, ep.start.tolist(), strict=True)
    ]
    series_id = st.series_ids[ep.sid]
    cols = {
        "anomaly_id": ids,
        "series_id": pl.Series(series_id, dtype=pl.Int64).set(pl.Series(series_id < 0), None),
        "sensor": sensors,
        "metric": metrics,
        "kind": kinds,
        "severity": _severity(ep.kind, ep.score),
        "score": np.clip(ep.score, 0.0, 1.0),
        "state": np.where(ep.resolved, "resolved", "open").tolist(),
        "started_at": _ts(ep.start),
        "ended_at": _ts(ep.ended),
        "resolved_at": _ts(ep.resolved_at),
        "first_ts": _ts(ep.start),
        "last_ts": _ts(ep.last),
        "n_readings": ep.n,
        "first_value": ep.first_x,
        "peak_value": ep.x,
        "peak_ts": _ts(ep.pts),
        "baseline": ep.base,
        "statistic": ep.stat,
        "explanation": text,
        "config_version": versions,
        "opened": ep.opened,
        "opened_at": _ts(ep.opened_at),
        "resolved": ep.resolved,
    }
    return pl.DataFrame(cols, schema=FLAG_SCHEMA)


def merge_flags(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Flags of several chunks of one batch: one row per anomaly, its latest state, opened if
    any chunk opened it."""
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(schema=FLAG_SCHEMA)
    if len(frames) == 1:
        return frames[0]
    allf = pl.concat(frames)
    return (
        allf.group_by("anomaly_id", maintain_order=True)
        .agg(
            pl.all().exclude("opened", "opened_at").last(),
            pl.col("opened").any(),
            pl.col("opened_at").drop_nulls().first(),
        )
        .select(list(FLAG_SCHEMA))
    )


def transitions(flags: pl.DataFrame) -> pl.DataFrame:
    """opened / resolved records of a batch's flags, in event-time order (opened first)."""
    if flags.height == 0:
        return pl.DataFrame(schema=TRANSITION_SCHEMA)
    o = np.flatnonzero(flags["opened"].to_numpy())
    r = np.flatnonzero(flags["resolved"].to_numpy())
    idx = np.concatenate([o, r])
    us = lambda c: flags[c].dt.epoch("us").fill_null(NONE_TS).to_numpy()  # noqa: E731
    at = np.concatenate([us("opened_at")[o], us("resolved_at")[r]])
    is_open = np.r_[np.ones(len(o), dtype=np.bool_), np.zeros(len(r), dtype=np.bool_)]
    order = np.lexsort((~is_open, at))
    idx, at, is_open = idx[order], at[order], is_open[order]
    sub = flags[idx]  # one row gather
    # An anomaly opened and resolved in one batch is seen as open in its 'opened' record.
    cols = {
        "transition": np.where(is_open, "opened", "resolved").tolist(),
        "at": _ts(at),
        **{c: sub[c] for c in TRANSITION_SCHEMA if c not in ("transition", "at")},
        "state": np.where(is_open, "open", sub["state"].to_numpy()).tolist(),
        "ended_at": _ts(np.where(is_open, NONE_TS, us("ended_at")[idx])),
        "resolved_at": _ts(np.where(is_open, NONE_TS, us("resolved_at")[idx])),
    }
    return pl.DataFrame(cols, schema=TRANSITION_SCHEMA)

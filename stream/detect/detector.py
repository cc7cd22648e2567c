"""The streaming anomaly detector: ``Detector(config).process(batch, now_us) -> Detection``.

``batch`` is the processor's validated frame: ``sensor`` (str), ``metric`` (str), ``ts_us``
(Int64, µs UTC), ``value`` (Float64), and optionally ``series_id`` (the database's id of the
series: then the detector maps series by integer instead of joining two string columns).
Rows may come in any order and may repeat. What the detector knows about each series
(physical range, expected interval, the sensor type's thresholds) comes from
:meth:`Detector.update_registry`; a series it has no registry row for is detected with the
defaults of its metric name (no silence detection: its interval is unknown).

``now_us`` is the injected clock: silence is judged at ``min(now_us, watermark)`` where the
watermark is a quantile of the series' latest event times (see :class:`Structural`), so a
processor catching up on a backlog, or one sensor with a fast clock, does not make every
sensor look silent. ``now_us=None`` skips the silence check (offline replays).

Everything here is pure and deterministic: no clock, socket or database; the state is in
:class:`SeriesState` and :meth:`snapshot` / :meth:`restore` round-trip it exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from stream.detect import episodes
from stream.detect.config import (
    METRIC_DEFAULTS,
    ConfigError,
    DetectionConfig,
    MetricDefaults,
    Rules,
    Structural,
    parse_detection,
)
from stream.detect.core import ChunkOut, score_chunk
from stream.detect.episodes import Episodes
from stream.detect.flags import FLAG_SCHEMA, build_flags, merge_flags, transitions
from stream.detect.hits import RANGE, SILENCE, Gaps, to_score
from stream.detect.segments import F8, I8
from stream.detect.state import NONE_TS, SeriesState

log = logging.getLogger(__name__)
SILENCE_EVERY_US = 1_000_000

REGISTRY_SCHEMA: dict[str, pl.DataType] = {
    "sensor": pl.String(),
    "metric": pl.String(),
    "min_value": pl.Float64(),
    "max_value": pl.Float64(),
    "interval_s": pl.Float64(),
    "detection": pl.String(),  # the sensor type's detection document (JSON), null = defaults
    "unit": pl.String(),
    "series_id": pl.Int64(),
}


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of a detector; :meth:`build` makes the stateful :class:`Detector`."""

    structural: Structural = field(default_factory=Structural)
    # Thresholds of series whose type has no detection document, and of unregistered series.
    default: DetectionConfig = field(default_factory=DetectionConfig)

    def build(self) -> Detector:
        return Detector(self)


@dataclass
class Detection:
    flags: pl.DataFrame  # FLAG_SCHEMA: one row per anomaly opened, extended or resolved
    transitions: pl.DataFrame  # TRANSITION_SCHEMA: one row per opened / resolved
    stats: dict[str, int]


@dataclass
class Offline:
    """Per-row results of :meth:`Detector.score` (rows in the sorted order it reports)."""

    order: I8  # input row of each sorted row
    score: F8
    events: tuple[I8, I8, I8, I8]  # (sid, kind, lo_ts, hi_ts)
    detection: Detection


class Detector:
    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.st = SeriesState(self.config.structural)
        self._lut = np.full(0, -1, dtype=np.int64)  # series_id -> dense index
        self._docs: dict[str, DetectionConfig] = {}

    # --- registry -------------------------------------------------------------------------
    def update_registry(self, registry: pl.DataFrame) -> None:
        """Set what the registry says about series (REGISTRY_SCHEMA; missing columns are
        null). Call it at start and whenever the registry changes; state is kept."""
        reg = registry.with_columns(
            pl.lit(None, dtype=t).alias(c) for c, t in REGISTRY_SCHEMA.items() if c not in registry
        ).select(pl.col(c).cast(t) for c, t in REGISTRY_SCHEMA.items())
        reg = reg.unique(["sensor", "metric"], keep="last", maintain_order=True)
        idx, _ = self._register(reg)
        self._set_params(idx, reg)

    def _unknown(self, batch: pl.DataFrame) -> None:
        """Series of a batch the detector has no row for get the defaults of their metric;
        series it knows (e.g. from the registry, before the database gave them an id) only
        learn their ``series_id`` and keep their thresholds."""
        reg = batch.select("sensor", "metric", *(["series_id"] if "series_id" in batch else []))
        reg = reg.with_columns(
            pl.lit(None, dtype=t).alias(c) for c, t in REGISTRY_SCHEMA.items() if c not in reg
        ).select(pl.col(c).cast(t) for c, t in REGISTRY_SCHEMA.items())
        idx, new = self._register(reg.unique(["sensor", "metric"], maintain_order=True))
        if new.any():
            self._set_params(idx[new], reg.unique(["sensor", "metric"], maintain_order=True)
                             .filter(pl.Series(new)))  # fmt: skip

    def _register(self, reg: pl.DataFrame) -> tuple[I8, npt.NDArray[np.bool_]]:
        """Dense indices of the (sensor, metric) pairs of ``reg`` (adding unknown ones), and
        which were unknown."""
        st = self.st
        joined = reg.select("sensor", "metric", "series_id").join(
            st.keys, on=["sensor", "metric"], how="left", maintain_order="left"
        )
        was_new = joined["idx"].is_null().to_numpy()
        new = joined.filter(pl.col("idx").is_null())
        if new.height:
            ids = new["series_id"].fill_null(-1).to_numpy()
            st.add(new["sensor"].to_list(), new["metric"].to_list(), ids)
            joined = reg.select("sensor", "metric").join(
                st.keys, on=["sensor", "metric"], how="left", maintain_order="left"
            )
        idx = joined["idx"].to_numpy().astype(np.int64)
        sids = reg["series_id"].fill_null(-1).to_numpy()
        known = sids >= 0
        if known.any():
            ids = sids[known].astype(np.int64)
            st.series_ids[idx[known]] = ids
            self._map_ids(ids, idx[known])
        return idx, was_new

    def _map_ids(self, ids: I8, idx: I8) -> None:
        top = int(ids.max()) + 1
        if top > len(self._lut):
            lut = np.full(max(top, 2 * len(self._lut), 1024), -1, dtype=np.int64)
            lut[: len(self._lut)] = self._lut
            self._lut = lut
        self._lut[ids] = idx

    def _config_of(self, doc: str | None) -> DetectionConfig:
        if doc is None or doc.strip() in ("", "{}"):
            return self.config.default
        cfg = self._docs.get(doc)
        if cfg is None:
            try:
                cfg = parse_detection(doc)
            except ConfigError as e:
                # The registry should not hold a bad document; if it does, keep detecting with
                # the defaults rather than stopping the stream.
                log.warning(
                    "bad detection config in the registry; using defaults", extra={"error": str(e)}
                )
                cfg = self.config.default
            self._docs[doc] = cfg
        return cfg

    def _set_params(self, idx: I8, reg: pl.DataFrame) -> None:
        st = self.st
        combos = reg.select("detection", "metric").unique(maintain_order=True)
        rows: list[dict[str, Any]] = []
        for doc, metric in combos.iter_rows():  # one per (sensor type, metric): a handful
            rules = self._config_of(doc).rules_for(metric)
            rows.append(_rule_row(doc, metric, rules, METRIC_DEFAULTS.get(metric), st))
        params = pl.DataFrame(rows, infer_schema_length=None).with_columns(
            pl.col("detection").cast(pl.String), pl.col("version").cast(pl.String)
        )
        p = reg.join(params, on=["detection", "metric"], how="left", nulls_equal=True,
                     maintain_order="left")  # fmt: skip
        col = lambda c: p[c].to_numpy()  # noqa: E731
        # the type's config, else the registry, else the metric kind's defaults
        st.min_v[idx] = _first(col("r_min"), col("min_value"), col("d_low"))
        st.max_v[idx] = _first(col("r_max"), col("max_value"), col("d_high"))
        interval = _first(col("r_interval"), col("interval_s"))
        interval = np.where(np.isfinite(interval) & (interval > 0), interval, 0.0)
        min_s = col("min_s")
        allowed = np.where(interval > 0, np.maximum(col("factor") * interval, min_s), min_s)
        st.interval_us[idx] = (interval * 1e6).astype(np.int64)
        st.allowed_us[idx] = (allowed * 1e6).astype(np.int64)
        for name in ("spike_z", "shift_z", "flat_tol", "noise_ratio", "min_scale"):
            st.a[name][idx] = col(name)
        for name in ("spike_max", "spike_confirm", "shift_min", "flat_min"):
            st.a[name][idx] = col(name).astype(np.int64)
        st.flat_min_us[idx] = (col("flat_min_s") * 1e6).astype(np.int64)
        st.resolve[idx] = np.stack([col(f"resolve_{k}") for k in range(5)], axis=1)
        st.on[idx] = np.stack([col(f"on_{k}") for k in range(6)], axis=1).astype(np.bool_)
        versions = col("version")
        for v in dict.fromkeys(versions):
            if v not in st.versions:
                st.versions.append(v)
        pos = {v: i for i, v in enumerate(st.versions)}
        st.cfg[idx] = np.asarray([pos[v] for v in versions], dtype=np.int32)
        units = p["unit"].fill_null("").to_list()
        for i, u in zip(idx.tolist(), units, strict=True):
            st.units[i] = u

    def _index(self, batch: pl.DataFrame) -> I8:
        """Dense series index of each row; unknown series are registered with defaults."""
        if "series_id" in batch.columns and batch["series_id"].null_count() == 0:
            ids = batch["series_id"].cast(pl.Int64).to_numpy()
            if len(ids) and ids.min() >= 0:
                idx = np.full(len(ids), -1, dtype=np.int64)
                inside = ids < len(self._lut)
                idx[inside] = self._lut[ids[inside]]
                if (idx < 0).any():
                    miss = batch.filter(pl.Series(idx < 0)).unique("series_id", maintain_order=True)
                    self._unknown(miss)
                    idx = self._lut[ids]
                return idx
        keys = batch.select("sensor", "metric").join(
            self.st.keys, on=["sensor", "metric"], how="left", maintain_order="left"
        )
        idx_s = keys["idx"]
        if idx_s.null_count():
            miss = keys.filter(pl.col("idx").is_null()).unique(
                ["sensor", "metric"], maintain_order=True
            )
            self._unknown(miss.select("sensor", "metric"))
            idx_s = batch.select("sensor", "metric").join(
                self.st.keys, on=["sensor", "metric"], how="left", maintain_order="left"
            )["idx"]
        return idx_s.to_numpy().astype(np.int64)

    # --- detection ------------------------------------------------------------------------
    def process(self, batch: pl.DataFrame, now_us: int | None) -> Detection:
        """Detect on one batch; returns the flags and transitions it caused."""
        return self._process(batch, now_us, offline=False)[0]

    def score(self, batch: pl.DataFrame) -> Offline:
        """The same detection as :meth:`process` (no clock: silence by gaps only), also
        returning a score per row and the readings each detection concerns."""
        _, off = self._process(batch, None, offline=True)
        assert off is not None
        return off

    def _process(
        self, batch: pl.DataFrame, now_us: int | None, offline: bool
    ) -> tuple[Detection, Offline | None]:
        missing = {"sensor", "metric", "ts_us", "value"} - set(batch.columns)
        if missing:
            raise ValueError(f"batch lacks columns {sorted(missing)}")
        stats = {"rows": batch.height, "nonfinite": 0, "new_series": 0, "clock_jumps": 0}
        n0 = self.st.n
        idx = self._index(batch) if batch.height else np.zeros(0, dtype=np.int64)
        stats["new_series"] = self.st.n - n0
        ts = batch["ts_us"].cast(pl.Int64).to_numpy()
        x = batch["value"].cast(pl.Float64).to_numpy()
        fin = np.isfinite(x)
        stats["nonfinite"] = int(len(x) - np.count_nonzero(fin))
        rows = np.flatnonzero(fin) if stats["nonfinite"] else np.arange(len(x))
        order = rows[_sort_order(idx[rows], ts[rows])]
        sid, ts, x = idx[order], ts[order], x[order]
        parts: list[Episodes] = []
        scores: list[F8] = []
        evs: list[tuple[I8, I8, I8, I8]] = []
        step = self.config.structural.max_chunk_rows
        for lo in range(0, len(sid), step):
            out = score_chunk(self.st, sid[lo : lo + step], ts[lo : lo + step],
                              x[lo : lo + step], offline=offline)  # fmt: skip
            parts.extend(episodes.track(self.st, k, out.hits[k]) for k in range(5))
            parts.append(self._late_range(out))
            parts.append(self._arrival_silence(out.gaps))
            if out.jump is not None:
                stats["clock_jumps"] += 1
                log.warning(
                    "event time of the stream jumped; silence timers restart",
                    extra={"from_us": out.jump[0], "to_us": out.jump[1]},
                )
            if offline:
                assert out.row_score is not None and out.events is not None
                scores.append(out.row_score)
                evs.append(out.events)
        if now_us is not None:
            parts.append(self._live_silence(now_us))
        ep = Episodes.concat([p for p in parts if p.size])
        flags = build_flags(self.st, ep) if ep.size else pl.DataFrame(schema=FLAG_SCHEMA)
        if flags.height and flags["anomaly_id"].n_unique() < flags.height:
            flags = merge_flags([flags])
        det = Detection(flags, transitions(flags), stats)
        stats["flags"], stats["transitions"] = flags.height, det.transitions.height
        if not offline:
            return det, None
        cat = lambda parts_: np.concatenate(parts_) if parts_ else np.zeros(0, np.int64)  # noqa: E731
        events = tuple(cat([e[i] for e in evs]) for i in range(4))
        return det, Offline(order, cat(scores).astype(np.float64), events, det)  # type: ignore[arg-type]

    def _late_range(self, out: ChunkOut) -> Episodes:
        """Late readings out of range: within the series' latest range episode they add
        nothing (a replay); otherwise each is an episode of its own, opened and resolved."""
        st, s, t = self.st, out.late_sid, out.late_ts
        if len(s) == 0:
            return episodes.empty(RANGE)
        covered = (st.ep_start[s, RANGE] <= t) & (t <= st.ep_last[s, RANGE])
        k = np.flatnonzero(~covered)
        s, t, xv = s[k], t[k], out.late_x[k]
        bound = np.where(xv > st.max_v[s], st.max_v[s], st.min_v[s])
        one = np.ones(len(k), dtype=np.int64)
        yes = np.ones(len(k), dtype=np.bool_)
        return Episodes(one * RANGE, s, t, t, one, out.late_score[k], xv, xv, bound, t, xv,
                        yes, t, yes, t, t)  # fmt: skip

    def _arrival_silence(self, g: Gaps) -> Episodes:
        """Gaps found when the next reading arrived, and open silences it ends."""
        st = self.st
        if len(g.sid) == 0:
            return episodes.empty(SILENCE)
        allowed = np.maximum(st.allowed_us[g.sid], 1)
        n = len(g.sid)
        resumes = g.resumes
        first_x = np.where(resumes, st.si_x[g.sid], g.prev_x)
        start = np.where(resumes, st.si_start[g.sid], g.prev_ts)
        opened = ~resumes
        st.si_open[g.sid[resumes]] = False
        return Episodes(
            np.full(n, SILENCE),
            g.sid,
            start,
            g.ts,
            np.full(n, 2),
            to_score((g.ts - start) / allowed),
            (g.ts - start) / 1e6,
            first_x,
            allowed / 1e6,
            start,
            first_x,
            opened,
            np.where(opened, g.prev_ts + allowed, NONE_TS),
            np.ones(n, dtype=np.bool_),
            g.ts,
            g.ts,
        )

    def _live_silence(self, now_us: int) -> Episodes:
        """Series whose latest reading is older than their allowance at the event clock."""
        st, q = self.st, self.config.structural.watermark_quantile
        if st.scalars["checked"] != NONE_TS and now_us - st.scalars["checked"] < SILENCE_EVERY_US:
            return episodes.empty(SILENCE)  # judged at most once a second of the clock
        st.scalars["checked"] = int(now_us)
        n = st.n
        last = st.last_ts[:n]
        live = (last != NONE_TS) & ~st.si_open[:n]
        if live.any():
            lv = last[live]
            cand = int(np.partition(lv, int(q * (len(lv) - 1)))[int(q * (len(lv) - 1))])
            st.scalars["watermark"] = max(st.scalars["watermark"], cand)
        wm = st.scalars["watermark"]
        if wm == NONE_TS:
            return episodes.empty(SILENCE)
        clock = min(int(now_us), wm)
        st.scalars["clock"] = max(st.scalars["clock"], clock)
        clock = st.scalars["clock"]
        jt = st.scalars["jump_to"]
        ref = np.maximum(last, jt) if jt != NONE_TS else last
        allowed = st.allowed_us[:n]
        silent = np.flatnonzero(live & st.on[:n, SILENCE] & (allowed > 0) & (clock - ref > allowed))
        if len(silent) == 0:
            return episodes.empty(SILENCE)
        s = silent
        st.si_open[s] = True
        st.si_start[s] = last[s]
        st.si_x[s] = st.last_x[s]
        k = len(s)
        no = np.full(k, NONE_TS)
        return Episodes(
            np.full(k, SILENCE),
            s.astype(np.int64),
            last[s],
            last[s],
            np.ones(k, dtype=np.int64),
            to_score((clock - last[s]) / allowed[s]),
            (clock - last[s]) / 1e6,
            st.last_x[s],
            allowed[s] / 1e6,
            last[s],
            st.last_x[s],
            np.ones(k, dtype=np.bool_),
            ref[s] + allowed[s],
            np.zeros(k, dtype=np.bool_),
            no,
            no,
        )

    # --- snapshot -------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        return self.st.snapshot()

    @classmethod
    def restore(cls, blob: bytes, config: DetectorConfig | None = None) -> Detector:
        det = cls(config)
        det.st = SeriesState.restore(blob, det.config.structural)
        ids = det.st.series_ids[: det.st.n]
        known = np.flatnonzero(ids >= 0)
        if len(known):
            det._map_ids(ids[known], known.astype(np.int64))
        return det


def _first(*arrays: npt.NDArray[Any]) -> F8:
    """Element-wise the first non-NaN of the arrays."""
    out = np.asarray(arrays[-1], dtype=np.float64)
    for a in reversed(arrays[:-1]):
        a = np.asarray(a, dtype=np.float64)
        out = np.where(np.isnan(a), out, a)
    return out


def _sort_order(sid: I8, ts: I8) -> I8:
    """Stable order by (series, time); cheap when each series is already in time order."""
    order = np.argsort(sid, kind="stable")
    s, t = sid[order], ts[order]
    if len(t) > 1 and ((np.diff(t) < 0) & (s[1:] == s[:-1])).any():
        order = np.lexsort((ts, sid))
    return order


def _rule_row(
    doc: str | None, metric: str, r: Rules, d: MetricDefaults | None, st: SeriesState
) -> dict[str, Any]:
    d = d or MetricDefaults()
    nan = float("nan")
    return {
        "detection": doc,
        "metric": metric,
        "r_min": nan if r.range.min is None else r.range.min,
        "r_max": nan if r.range.max is None else r.range.max,
        "d_low": d.low,
        "d_high": d.high,
        "r_interval": nan if r.silence.interval_s is None else r.silence.interval_s,
        "factor": r.silence.factor,
        "min_s": r.silence.min_s,
        "spike_z": r.spike.z,
        "spike_max": r.spike.max_readings,
        "spike_confirm": r.spike.confirm_readings,
        "shift_z": r.level_shift.z,
        "shift_min": r.level_shift.min_readings,
        "flat_min": r.flatline.min_readings,
        "flat_min_s": r.flatline.min_duration_s,
        "flat_tol": r.flatline.tolerance,
        "noise_ratio": r.noise.ratio,
        "min_scale": r.min_scale,
        "resolve_0": r.range.resolve_after,
        "resolve_1": r.spike.resolve_after,
        "resolve_2": r.level_shift.resolve_after,
        "resolve_3": 1,  # a flat line ends at the first reading that differs
        "resolve_4": r.noise.resolve_after,
        "on_0": r.range.enabled,
        "on_1": r.spike.enabled,
        "on_2": r.level_shift.enabled,
        "on_3": r.flatline.enabled,
        "on_4": r.noise.enabled,
        "on_5": r.silence.enabled,
        "version": r.version(st.structural),
    }

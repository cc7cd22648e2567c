"""``meetnet bench detect``: detection quality per kind, and the detector's cost per reading.

**Quality.** For each anomaly kind, ``series`` synthetic series (a mix of the use-case
profiles in :data:`simulators.anomalies.PROFILES`: daily and weekly cycles, correlated noise,
sensor resolution, sampling jitter) each get ``anomalies`` injected anomalies of that kind
(``simulators.anomalies.inject``). All series of a kind run through one detector in one batch
(the same code as the stream processor's), and every flag is matched to the ground truth:

- an injected anomaly is *found* when a flag of its kind overlaps its interval widened by a
  tolerance (2 sampling intervals; 32, the baseline window, for level shifts and noise, whose
  detection lags by design);
- a flag is *correct* when it overlaps an injected anomaly of its kind, so widened. Flags of
  other kinds than the series' injected one are false positives of their kind.

recall = found / injected, precision = correct / flags, per kind.

**Cost.** ``sensors`` × 5 metrics series, warmed up, then batches holding ``per_batch``
readings of every series; CPU time of the process (all threads) per reading, with and without
the ``series_id`` column (without it the detector joins on the sensor and metric strings).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from simulators.anomalies import KINDS, PROFILES, Score, labelled, match
from stream.detect import Detector, DetectorConfig

TOLERANCE_INTERVALS = {
    "range": 2,
    "spike": 2,
    "flatline": 2,
    "silence": 2,
    "level_shift": 32,
    "noise": 32,
}
TARGET = {"range": 0.9, "spike": 0.9, "flatline": 0.9, "silence": 0.9}


@dataclass(frozen=True)
class QualitySpec:
    series: int = 24  # per kind
    readings: int = 4032  # per series (14 days at 5 min)
    anomalies: int = 8  # per series
    seed: int = 7


def _kind_batch(kind: str, spec: QualitySpec) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    names = list(PROFILES)
    frames, reg, truth = [], [], {}
    for i in range(spec.series):
        name = names[i % len(names)]
        p = PROFILES[name]
        s = labelled(p, spec.readings, [kind], spec.anomalies, seed=spec.seed * 1_000_003
                     + KINDS.index(kind) * 10_007 + i)  # fmt: skip
        sensor = f"q-{kind.replace('_', '-')}-{i:03d}"
        frames.append(
            pl.DataFrame({"sensor": sensor, "metric": name, "ts_us": s.ts_us, "value": s.values})
        )
        reg.append((sensor, name, p.low, p.high, p.interval_s))
        truth[sensor] = ([(lb.start_us, lb.end_us) for lb in s.labels], p.interval_s)
    registry = pl.DataFrame(
        reg, schema=["sensor", "metric", "min_value", "max_value", "interval_s"], orient="row"
    )
    return pl.concat(frames), registry, truth


def quality(spec: QualitySpec, config: DetectorConfig | None = None) -> list[Score]:
    """Precision and recall per kind (see the module docstring for the matching rule)."""
    return quality_by_profile(spec, config)[0]


def quality_by_profile(
    spec: QualitySpec, config: DetectorConfig | None = None
) -> tuple[list[Score], dict[str, dict[str, float]]]:
    """:func:`quality`, plus the recall of each kind per profile (where a detector is weak)."""
    totals = {k: [0, 0, 0, 0] for k in KINDS}  # truths, found, detections, correct
    by_profile: dict[str, dict[str, list[int]]] = {k: {} for k in KINDS}
    for kind in KINDS:
        batch, registry, truth = _kind_batch(kind, spec)
        det = Detector(config)
        det.update_registry(registry)
        flags = det.process(batch, None).flags.unique("anomaly_id", keep="last")
        flags = flags.select(
            "sensor",
            "kind",
            pl.col("started_at").dt.epoch("us").alias("lo"),
            pl.col("last_ts").dt.epoch("us").alias("hi"),
        )
        by_series = flags.partition_by("sensor", "kind", as_dict=True)
        profile_of = dict(zip(registry["sensor"], registry["metric"], strict=True))
        for sensor, (labels, interval_s) in truth.items():
            totals[kind][0] += len(labels)
            cell = by_profile[kind].setdefault(profile_of[sensor], [0, 0])
            cell[0] += len(labels)
            for k in KINDS:
                f = by_series.get((sensor, k))
                found = [] if f is None else list(zip(f["lo"], f["hi"], strict=True))
                tol = int(TOLERANCE_INTERVALS[k] * interval_s * 1e6)
                hit, correct = match(k, labels if k == kind else [], found, tol)
                totals[k][2] += len(found)
                totals[k][3] += correct
                if k == kind:
                    totals[kind][1] += hit
                    cell[1] += hit
    recall = {k: {p: f / t for p, (t, f) in v.items() if t} for k, v in by_profile.items()}
    return [Score(k, *totals[k]) for k in KINDS], recall


@dataclass(frozen=True)
class Cost:
    sensors: int
    series: int
    per_batch: int  # readings per series per batch
    batch_rows: int
    readings: int
    cpu_s: float
    wall_s: float
    with_series_id: bool

    @property
    def per_core(self) -> float:
        return self.readings / self.cpu_s if self.cpu_s else float("inf")


def cost(sensors: int = 10_000, per_batch: int = 1, batches: int = 12, warmup: int = 48,
         with_series_id: bool = True, seed: int = 3) -> Cost:  # fmt: skip
    """Detector CPU time per reading on sensors x 5 metrics, after a warm-up that fills the
    baselines (so the block baselines are computed, as in steady state)."""
    metrics = ["pm25", "pm10", "no2", "temperature", "humidity"]
    n_series = sensors * len(metrics)
    rng = np.random.default_rng(seed)
    sensor = np.repeat([f"bench-{i:05d}" for i in range(sensors)], len(metrics))
    metric = np.tile(metrics, sensors)
    level = np.tile([15.0, 25.0, 30.0, 12.0, 70.0], sensors)
    reg = pl.DataFrame({
        "sensor": sensor, "metric": metric, "min_value": -1e6, "max_value": 1e6,
        "interval_s": 60.0, "series_id": np.arange(n_series, dtype=np.int64),
    })  # fmt: skip
    det = Detector()
    det.update_registry(reg)
    t0 = 1_798_761_600_000_000
    base = pl.DataFrame({"sensor": sensor, "metric": metric, "series_id": reg["series_id"]})

    def batch(k: int) -> pl.DataFrame:
        rows = []
        for j in range(per_batch):
            step = k * per_batch + j
            vals = level + rng.normal(0, 1.0, n_series).round(1)
            rows.append(base.with_columns(
                pl.lit(t0 + step * 60_000_000, dtype=pl.Int64).alias("ts_us"),
                pl.Series("value", vals),
            ))  # fmt: skip
        out = pl.concat(rows)
        return out if with_series_id else out.drop("series_id")

    n_warm = -(-warmup // per_batch)
    for k in range(n_warm):
        det.process(batch(k), None)
    frames = [batch(n_warm + k) for k in range(batches)]
    cpu = wall = 0.0
    for k, f in enumerate(frames):
        now = t0 + (n_warm + k + 1) * per_batch * 60_000_000
        c0, w0 = time.process_time(), time.perf_counter()
        det.process(f, now)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
    rows = sum(f.height for f in frames)
    return Cost(sensors, n_series, per_batch, frames[0].height, rows, cpu, wall, with_series_id)


def bench_detect(spec: QualitySpec, *, perf: bool, as_json: bool, sensors: int) -> int:
    t = time.perf_counter()
    scores, by_profile = quality_by_profile(spec)
    q_s = time.perf_counter() - t
    print(f"detection quality: {spec.series} series x {spec.readings} readings per kind, "
          f"{spec.anomalies} anomalies per series, seed {spec.seed} ({q_s:.1f} s)")  # fmt: skip
    print(f"{'kind':<12} {'injected':>8} {'found':>6} {'flags':>6} {'correct':>7} "
          f"{'recall':>7} {'precision':>9}  target")  # fmt: skip
    ok = True
    for s in scores:
        target = TARGET.get(s.kind)
        met = target is None or (s.recall >= target and s.precision >= target)
        ok &= met
        mark = "" if target is None else (f">= {target}: " + ("met" if met else "NOT met"))
        print(f"{s.kind:<12} {s.truths:>8} {s.found:>6} {s.detections:>6} {s.correct:>7} "
              f"{s.recall:>7.3f} {s.precision:>9.3f}  {mark}")  # fmt: skip
    print("recall by profile:")
    for kind, rec in by_profile.items():
        print(f"  {kind:<12} " + "  ".join(f"{p} {r:.2f}" for p, r in rec.items()))
    costs = []
    if perf:
        print(f"\ndetector cost, {sensors} sensors x 5 metrics (process CPU time, all threads):")
        for per_batch in (1, 5):
            for sid in (True, False):
                c = cost(sensors=sensors, per_batch=per_batch, with_series_id=sid)
                costs.append(c)
                print(f"  {c.batch_rows:>7} readings/batch ({per_batch}/series), "
                      f"{'series_id' if sid else 'string keys'}: "
                      f"{c.per_core:>12,.0f} readings/s per core "
                      f"({1e9 / c.per_core:.0f} ns/reading)")  # fmt: skip
    if as_json:
        print(json.dumps({
            "quality": [asdict(s) | {"recall": s.recall, "precision": s.precision}
                        for s in scores],
            "recall_by_profile": by_profile,
            "cost": [asdict(c) | {"readings_per_s_per_core": c.per_core} for c in costs],
            "targets_met": ok,
        }))  # fmt: skip
    return 0 if ok else 1

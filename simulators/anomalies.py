"""Realistic synthetic series with injected, labelled anomalies, for measuring detectors.

Pure NumPy and deterministic for a given ``numpy.random.Generator``. Two steps:

1. :func:`base_series` draws a clean series from a :class:`Profile`: a level, a daily cycle
   (two harmonics, like rush hours or the sun), a weekly cycle (weekends lower), AR(1)
   correlated noise plus white measurement noise, sampled every ``interval_s`` with jitter,
   rounded to the sensor's resolution and kept inside its physical range;
2. :func:`inject` adds anomalies of one or more kinds at random, well separated places and
   returns the new series with its ground truth: one :class:`Label` per anomaly (kind, first
   and last affected instant).

Kinds (magnitudes are in units of the profile's noise level, ``Profile.sd``):

=============  ==============================================================================
``range``      1-3 readings outside the physical range (above the maximum or below the minimum)
``spike``      1-3 readings displaced by 8-20 sd, then back
``level_shift`` a stretch of 60-200 readings displaced by 6-12 sd (it starts and ends abruptly)
``flatline``   30-150 readings stuck at the value before them
``noise``      60-200 readings with extra white noise of 4-8 sd
``silence``    6-60 sampling intervals without any reading
=============  ==============================================================================

Per-use-case simulators build on this: give a :class:`Profile` that looks like the quantity
(see :data:`PROFILES`) and, if needed, other :class:`Magnitudes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int64]
KINDS = ("range", "spike", "level_shift", "flatline", "noise", "silence")
DAY_US = 86_400_000_000
START_US = 1_798_761_600_000_000  # 2027-01-01T00:00:00Z, a Friday


@dataclass(frozen=True)
class Profile:
    """The shape of a clean series. Times are local solar time (UTC here, for simplicity)."""

    level: float = 20.0
    daily_amp: float = 6.0  # amplitude of the daily cycle
    peak_hour: float = 8.0  # hour of the daily maximum (the second harmonic adds an evening one)
    weekly_amp: float = 3.0  # how much lower weekends are
    noise_sd: float = 1.5  # marginal sd of the correlated (AR(1)) noise
    ar: float = 0.8  # its lag-1 autocorrelation
    white_sd: float = 0.3  # independent measurement noise
    decimals: int | None = 1  # reported resolution; None = unrounded
    low: float = 0.0  # physical range of the quantity
    high: float = 1000.0
    interval_s: float = 300.0  # sampling interval
    jitter: float = 0.05  # sampling jitter, as a fraction of the interval

    @property
    def sd(self) -> float:
        """The noise level anomaly magnitudes are measured in."""
        return float(np.hypot(self.noise_sd, self.white_sd))


# A few quantities of the platform's use cases.
PROFILES: dict[str, Profile] = {
    "pm25": Profile(),
    "no2": Profile(level=30, daily_amp=12, weekly_amp=6, noise_sd=3, white_sd=0.5),
    "temperature": Profile(
        level=11,
        daily_amp=4,
        peak_hour=15,
        weekly_amp=0,
        noise_sd=0.15,
        ar=0.95,
        white_sd=0.03,
        decimals=2,
        low=-40,
        high=60,
        interval_s=60,
    ),
    "water_level": Profile(
        level=250,
        daily_amp=40,
        peak_hour=3,
        weekly_amp=0,
        noise_sd=1.0,
        ar=0.6,
        white_sd=0.5,
        decimals=0,
        low=0,
        high=1000,
        interval_s=600,
    ),
    "laeq": Profile(
        level=55,
        daily_amp=8,
        peak_hour=17,
        weekly_amp=4,
        noise_sd=2.0,
        ar=0.5,
        white_sd=0.5,
        decimals=1,
        low=20,
        high=140,
        interval_s=60,
    ),
}


@dataclass(frozen=True)
class Magnitudes:
    """Ranges (low, high) the anomalies are drawn from; lengths in readings."""

    range_len: tuple[int, int] = (1, 3)
    spike_len: tuple[int, int] = (1, 3)
    spike_sd: tuple[float, float] = (8.0, 20.0)
    shift_len: tuple[int, int] = (60, 200)
    shift_sd: tuple[float, float] = (6.0, 12.0)
    flat_len: tuple[int, int] = (30, 150)
    noise_len: tuple[int, int] = (60, 200)
    noise_sd: tuple[float, float] = (4.0, 8.0)
    silence_intervals: tuple[int, int] = (6, 60)

    def length(self, kind: str) -> tuple[int, int]:
        return {
            "range": self.range_len,
            "spike": self.spike_len,
            "level_shift": self.shift_len,
            "flatline": self.flat_len,
            "noise": self.noise_len,
            "silence": self.silence_intervals,
        }[kind]


@dataclass(frozen=True)
class Label:
    kind: str
    start_us: int  # first affected instant (for silence: the first missing sampling time)
    end_us: int  # last affected instant, inclusive


@dataclass(frozen=True)
class Series:
    ts_us: I8
    values: F8
    labels: list[Label] = field(default_factory=list)


def base_series(
    profile: Profile, n: int, rng: np.random.Generator, start_us: int = START_US
) -> Series:
    """``n`` clean readings."""
    p = profile
    step = p.interval_s * 1e6
    jitter = rng.uniform(-p.jitter, p.jitter, n) * step
    ts = (start_us + np.arange(n) * step + jitter).astype(np.int64)
    ts = np.maximum.accumulate(ts)  # jitter never reorders
    hours = ((ts - START_US) / 3.6e9) % 24
    day = ((ts - START_US) // DAY_US + 4) % 7  # 0 = Monday (START_US is a Friday)
    phase = 2 * np.pi * (hours - p.peak_hour) / 24
    daily = p.daily_amp * (0.7 * np.cos(phase) + 0.3 * np.cos(2 * phase))
    weekly = np.where(day >= 5, -p.weekly_amp, 0.0)
    innov = rng.normal(0, p.noise_sd * np.sqrt(1 - p.ar**2), n)
    ar = np.empty(n)
    _ar1(innov, p.ar, rng.normal(0, p.noise_sd), ar)
    values = p.level + daily + weekly + ar + rng.normal(0, p.white_sd, n)
    return Series(ts, _finish(values, p))


def _ar1(innov: F8, phi: float, x0: float, out: F8) -> None:
    """out[t] = phi * out[t-1] + innov[t], in blocks with NumPy (no Python loop per value)."""
    # Closed form per block of k: out[t0+j] = phi^(j+1) out[t0-1] + sum_i phi^(j-i) innov[t0+i]
    k = 256
    powers = phi ** np.arange(k + 1)
    lower = np.tril(powers[np.subtract.outer(np.arange(k), np.arange(k)).clip(0)])
    lower[np.triu_indices(k, 1)] = 0.0
    prev = x0
    for t0 in range(0, len(innov), k):
        blk = innov[t0 : t0 + k]
        m = len(blk)
        vals = lower[:m, :m] @ blk + powers[1 : m + 1] * prev
        out[t0 : t0 + m] = vals
        prev = vals[-1]


def _finish(values: F8, p: Profile) -> F8:
    v = np.clip(values, p.low, p.high)
    if p.decimals is not None:
        v = np.round(v, p.decimals)
    return v


def inject(
    series: Series,
    profile: Profile,
    kinds: tuple[str, ...] | list[str],
    count: int,
    rng: np.random.Generator,
    *,
    magnitudes: Magnitudes | None = None,
    warmup: int = 300,
    spacing: int = 400,
) -> Series:
    """Inject ``count`` anomalies (kinds drawn uniformly from ``kinds``) at random places at
    least ``spacing`` readings apart, none in the first ``warmup`` readings (detectors need
    history). Raises ValueError if the series is too short for that many."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown anomaly kinds {sorted(unknown)}; known: {KINDS}")
    mag = magnitudes or Magnitudes()
    n = len(series.values)
    slots = (n - warmup - spacing) // spacing
    if count > slots:
        raise ValueError(f"{n} readings hold at most {max(slots, 0)} anomalies {spacing} apart")
    where = warmup + spacing * np.sort(rng.choice(slots, size=count, replace=False))
    where = where + rng.integers(0, spacing // 4, size=count)
    ts, v = series.ts_us.copy(), series.values.copy()
    keep = np.ones(n, dtype=np.bool_)
    labels: list[Label] = []
    # one Python step per anomaly (a handful), NumPy within each
    for i, kind in zip(where.tolist(), rng.choice(list(kinds), size=count).tolist(), strict=True):
        lo_len, hi_len = mag.length(kind)
        m = int(rng.integers(lo_len, hi_len + 1))
        sl = slice(i, i + m)
        sd = profile.sd
        if kind == "range":
            span = profile.high - profile.low
            if rng.random() < 0.5:
                v[sl] = profile.high + rng.uniform(0.02, 0.5, m) * span
            else:
                v[sl] = profile.low - rng.uniform(0.02, 0.5, m) * span
        elif kind in ("spike", "level_shift"):
            # displaced within the physical range (clipping would make a flat line instead)
            size = rng.uniform(*(mag.spike_sd if kind == "spike" else mag.shift_sd)) * sd
            up = rng.random() < (0.7 if kind == "spike" else 0.5)
            if v[sl].min() - size < profile.low:
                up = True
            elif v[sl].max() + size > profile.high:
                up = False
            v[sl] = np.clip(v[sl] + (size if up else -size), profile.low, profile.high)
        elif kind == "flatline":
            v[sl] = v[i - 1]
        elif kind == "noise":
            extra = rng.normal(0, rng.uniform(*mag.noise_sd) * sd, m)
            v[sl] = np.clip(v[sl] + extra, profile.low, profile.high)
        else:  # silence
            keep[sl] = False
        if kind in ("spike", "level_shift", "noise") and profile.decimals is not None:
            v[sl] = np.round(v[sl], profile.decimals)
        end = min(i + m, n) - 1
        labels.append(Label(kind, int(ts[i]), int(ts[end])))
    return Series(ts[keep], v[keep], sorted(labels, key=lambda lb: lb.start_us))


def labelled(
    profile: Profile,
    n: int,
    kinds: tuple[str, ...] | list[str],
    count: int,
    seed: int,
    **kwargs: object,
) -> Series:
    """A clean series of ``n`` readings with ``count`` anomalies: the usual one-liner."""
    rng = np.random.default_rng(seed)
    return inject(base_series(profile, n, rng), profile, kinds, count, rng, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Score:
    """Event-level precision and recall of one kind."""

    kind: str
    truths: int  # injected anomalies
    found: int  # of which at least one detection overlaps
    detections: int  # detections of this kind
    correct: int  # of which at least one injected anomaly overlaps

    @property
    def recall(self) -> float:
        return self.found / self.truths if self.truths else float("nan")

    @property
    def precision(self) -> float:
        return self.correct / self.detections if self.detections else float("nan")


def overlaps(a_lo: I8, a_hi: I8, b_lo: I8, b_hi: I8) -> npt.NDArray[np.bool_]:
    """Matrix [i, j]: interval a_i = [a_lo, a_hi] meets b_j = [b_lo, b_hi] (inclusive)."""
    return (a_lo[:, None] <= b_hi[None, :]) & (b_lo[None, :] <= a_hi[:, None])


def match(
    kind: str, truth: list[tuple[int, int]], found: list[tuple[int, int]], tolerance_us: int
) -> tuple[int, int]:
    """Event matching on one series: an injected anomaly [s, e] is found when a detection of
    its kind overlaps [s - tolerance, e + tolerance]; a detection is correct when it overlaps
    some injected anomaly of its kind so widened. Returns (found, correct)."""
    if not truth or not found:
        return 0, 0
    t = np.asarray(truth, dtype=np.int64)
    d = np.asarray(found, dtype=np.int64)
    m = overlaps(t[:, 0] - tolerance_us, t[:, 1] + tolerance_us, d[:, 0], d[:, 1])
    return int(m.any(axis=1).sum()), int(m.any(axis=0).sum())

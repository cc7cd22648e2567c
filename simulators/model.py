"""Plausible air-quality readings for simulated sensors in Flemish cities, computed with NumPy.

Everything here is pure: a :class:`Fleet` (made by :func:`make_fleet` from a size and a seed)
and a timestamp fully determine the readings. Noise comes from a counter-based hash of
(seed, sensor, time, metric), not from a stateful generator, so asking for the same sensor at
the same instant always gives the same value, whatever was asked before.

The shape of a day (local time, Europe/Brussels):

* pm25, pm10, no2 peak in the morning (about 08:00) and evening (about 17:30) rush hours on
  weekdays, are lowest at night, and are higher in winter (heating) than in summer;
* temperature follows the season and peaks in the afternoon (about 15:00);
* humidity moves against temperature (highest at night).

Each sensor has its own traffic exposure, offsets and noise; values are rounded to what a real
sensor reports and clipped to physical ranges.

:class:`Encoder` turns one tick into MQTT messages of wire format v1 (``meetnet.wire``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

METRICS: Final = ("pm25", "pm10", "no2", "temperature", "humidity")
UNITS: Final = {
    "pm25": "ug/m3",
    "pm10": "ug/m3",
    "no2": "ug/m3",
    "temperature": "degC",
    "humidity": "%",
}
# Physical (sensor) ranges, one row per metric in METRICS order: [low, high].
RANGES: Final = np.array(
    [[0.0, 500.0], [0.0, 600.0], [0.0, 400.0], [-30.0, 45.0], [0.0, 100.0]], dtype=np.float64
)
DECIMALS: Final = (1, 1, 1, 2, 1)
MODES: Final = ("batch", "single")


@dataclass(frozen=True, slots=True)
class City:
    name: str
    lat: float
    lon: float
    weight: float  # share of the simulated sensors, roughly by population


CITIES: Final = (
    City("antwerpen", 51.2194, 4.4025, 0.30),
    City("gent", 51.0543, 3.7174, 0.24),
    City("brugge", 51.2093, 3.2247, 0.11),
    City("leuven", 50.8798, 4.7005, 0.12),
    City("mechelen", 51.0259, 4.4777, 0.11),
    City("hasselt", 50.9307, 5.3325, 0.12),
)
_TZ: Final = ZoneInfo("Europe/Brussels")
_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 86_400_000


@dataclass(frozen=True, eq=False)
class Fleet:
    """N simulated sensors: identity, place, and the per-sensor traits that shape readings."""

    seed: int
    ids: tuple[str, ...]
    city: npt.NDArray[np.intp]  # index into CITIES
    lat: FloatArray
    lon: FloatArray
    traffic: FloatArray  # 0..1: how close to a busy road
    pm_scale: FloatArray  # multiplies the background particulate level
    pm10_ratio: FloatArray  # pm10 / pm25 of the sensor's air
    no2_base: FloatArray  # background NO2, ug/m3
    temp_offset: FloatArray  # degC (urban heat island, sensor placement)
    hum_offset: FloatArray  # percentage points

    def __len__(self) -> int:
        return len(self.ids)

    def city_name(self, i: int) -> str:
        return CITIES[int(self.city[i])].name


def sensor_id(i: int, n: int) -> str:
    """The id of sensor ``i`` (0-based) of ``n``: ``sim-air-0001`` for i=0."""
    return f"sim-air-{i + 1:0{max(4, len(str(n)))}d}"


def make_fleet(n: int, seed: int = 0) -> Fleet:
    """``n`` sensors spread over Flemish cities; the same (n, seed) always gives the same fleet."""
    if n < 1:
        raise ValueError("a fleet needs at least one sensor")
    rng = np.random.default_rng([seed, 0x51A7])
    weights = np.array([c.weight for c in CITIES])
    city = rng.choice(len(CITIES), size=n, p=weights / weights.sum())
    city_lat = np.array([c.lat for c in CITIES])[city]
    city_lon = np.array([c.lon for c in CITIES])[city]
    # Within a few km of the centre: about 0.02 deg lat = 2.2 km, 0.03 deg lon = 2.1 km here.
    lat = np.round(city_lat + rng.normal(0.0, 0.02, n).clip(-0.06, 0.06), 5)
    lon = np.round(city_lon + rng.normal(0.0, 0.03, n).clip(-0.09, 0.09), 5)
    return Fleet(
        seed=seed,
        ids=tuple(sensor_id(i, n) for i in range(n)),
        city=city.astype(np.intp),
        lat=lat,
        lon=lon,
        traffic=rng.beta(2.0, 2.5, n),
        pm_scale=rng.lognormal(0.0, 0.2, n),
        pm10_ratio=rng.uniform(1.4, 1.9, n),
        no2_base=rng.uniform(9.0, 18.0, n),
        temp_offset=rng.normal(0.6, 0.5, n),
        hum_offset=rng.normal(0.0, 3.0, n),
    )


# --- counter-based noise ------------------------------------------------------------------
# splitmix64's finaliser as the hash. Scalar keys (seed, stream) are mixed once in Python;
# array keys (sensor, city, time) are mixed in NumPy, whose uint64 arithmetic wraps silently.
_M64: Final = (1 << 64) - 1
_GOLDEN_INT: Final = 0x9E3779B97F4A7C15
_MIX1_INT: Final = 0xBF58476D1CE4E5B9
_MIX2_INT: Final = 0x94D049BB133111EB
_GOLDEN: Final = np.uint64(_GOLDEN_INT)
_MIX1: Final = np.uint64(_MIX1_INT)
_MIX2: Final = np.uint64(_MIX2_INT)
_S27, _S30, _S31, _S11 = (np.uint64(n) for n in (27, 30, 31, 11))
U64Array = npt.NDArray[np.uint64]


def _mix_int(x: int) -> int:
    x = (x + _GOLDEN_INT) & _M64
    x = ((x ^ (x >> 30)) * _MIX1_INT) & _M64
    x = ((x ^ (x >> 27)) * _MIX2_INT) & _M64
    return x ^ (x >> 31)


def _key(*parts: int) -> int:
    h = 0
    for p in parts:
        h = _mix_int(h ^ (p & _M64))
    return h


def _mix(x: U64Array) -> U64Array:
    x = x + _GOLDEN  # a new array: the caller's is never modified
    x ^= x >> _S30
    x *= _MIX1
    x ^= x >> _S27
    x *= _MIX2
    x ^= x >> _S31
    return x


def _normal(keys: U64Array, *arrays: U64Array) -> FloatArray:
    """Standard normal noise, a pure function of its inputs (Box-Muller on hashed uniforms).

    ``keys`` (m,) are per-stream keys (from :func:`_key`) and ``arrays`` (n,) the per-reading
    keys; the result has shape (n, m): one independent stream per column.
    """
    h = arrays[0][:, None] ^ keys[None, :]
    for a in arrays[1:]:
        h = _mix(h) ^ a[:, None]
    h = _mix(h)
    u1 = ((_mix(h ^ np.uint64(1)) >> _S11).astype(np.float64) + 0.5) * 2.0**-53
    u2 = (_mix(h ^ np.uint64(2)) >> _S11).astype(np.float64) * 2.0**-53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


@functools.lru_cache(maxsize=64)
def _keys(seed: int, *streams: int) -> U64Array:
    keys = np.array([_key(seed, s) for s in streams], dtype=np.uint64)
    keys.flags.writeable = False
    return keys


def _smooth(keys: U64Array, ts_ms: IntArray, period_ms: int, where: U64Array) -> FloatArray:
    """Slowly varying N(0, ~1) noise, shape (n, len(keys)): random knots every ``period_ms``,
    eased between them."""
    k = ts_ms // period_ms
    frac = (ts_ms - k * period_ms) / period_ms
    ease = (frac * frac * (3.0 - 2.0 * frac))[:, None]
    ku = k.astype(np.uint64)
    a = _normal(keys, where, ku)
    b = _normal(keys, where, ku + np.uint64(1))
    # Easing shrinks the variance mid-way; rescale so the spread stays about constant.
    return (a + (b - a) * ease) / np.sqrt((1.0 - ease) ** 2 + ease**2)


# --- local time ---------------------------------------------------------------------------
def _utc_offset_s(epoch_s: int) -> float:
    offset = datetime.fromtimestamp(epoch_s, UTC).astimezone(_TZ).utcoffset()
    return offset.total_seconds() if offset is not None else 3600.0


def _local_hours(ts_ms: IntArray) -> tuple[FloatArray, IntArray, FloatArray]:
    """(hour of day 0..24, weekday 0=Monday, day of year 0..365) in Brussels for each ts."""
    hours, inverse = np.unique(ts_ms // _HOUR_MS, return_inverse=True)
    # One zoneinfo look-up per distinct UTC hour (a tick spans one or two), not per reading.
    offsets = np.array([_utc_offset_s(int(h) * 3600) for h in hours])
    local_ms = ts_ms + (offsets[inverse.reshape(ts_ms.shape)] * 1000).astype(np.int64)
    days = local_ms // _DAY_MS
    hour = (local_ms % _DAY_MS) / _HOUR_MS
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    day_of_year = (local_ms / _DAY_MS) % 365.2425
    return hour, weekday.astype(np.int64), day_of_year


def _bump(hour: FloatArray, centre: float, width: float) -> FloatArray:
    d = (hour - centre + 12.0) % 24.0 - 12.0  # wrap around midnight
    return np.exp(-0.5 * (d / width) ** 2)


# --- the model ----------------------------------------------------------------------------
def readings(fleet: Fleet, idx: npt.ArrayLike, ts_ms: npt.ArrayLike) -> FloatArray:
    """Readings of sensors ``idx`` at ``ts_ms`` (epoch ms; one per sensor, or one for all).

    Returns an array of shape ``(len(idx), len(METRICS))``, columns in METRICS order,
    rounded and clipped to RANGES; never NaN.
    """
    i = np.atleast_1d(np.asarray(idx, dtype=np.intp))
    ts = np.broadcast_to(np.asarray(ts_ms, dtype=np.int64), i.shape).copy()
    if i.size and (i.min() < 0 or i.max() >= len(fleet)):
        raise IndexError(f"sensor index out of range 0..{len(fleet) - 1}")
    seed = fleet.seed
    city = fleet.city[i]
    city_u = city.astype(np.uint64)
    sensor_u = i.astype(np.uint64)
    ts_u = ts.astype(np.uint64)
    hour, weekday, doy = _local_hours(ts)

    # +1 in late July (warmest), -1 in late January (coldest).
    season = np.cos(2.0 * math.pi * (doy - 202.0) / 365.2425)
    winter = 0.5 * (1.0 - season)  # 0 in summer, 1 in winter

    # Weather: shared by the sensors of a city (6-hourly) plus a local part (hourly).
    weather_t, weather_pm, weather_h = _smooth(_keys(seed, 11, 12, 13), ts, 6 * _HOUR_MS, city_u).T
    local_pm, local_no2 = _smooth(_keys(seed, 21, 22), ts, _HOUR_MS, sensor_u).T
    noise = _normal(_keys(seed, 31, 32, 33, 34, 35), sensor_u, ts_u)  # white, one per metric

    def white(metric: int) -> FloatArray:
        return noise[:, metric]

    # Temperature: seasonal mean, afternoon peak, larger daily swing in summer.
    diurnal_t = np.cos(2.0 * math.pi * (hour - 15.0) / 24.0)
    swing = 4.0 + 1.5 * season
    temperature = (
        10.8
        + 7.5 * season
        + swing * diurnal_t
        + 2.5 * weather_t
        + fleet.temp_offset[i]
        + 0.15 * white(3)
    )

    # Humidity: high at night and in winter, low on warm afternoons.
    humidity = (
        80.0
        - 6.0 * season
        - 2.6 * swing * diurnal_t
        - 2.0 * weather_t
        + 5.0 * weather_h
        + fleet.hum_offset[i]
        + 1.0 * white(4)
    )

    # Traffic: rush hours on weekdays, a flatter daytime level at weekends, quiet nights.
    workday = weekday < 5
    rush = np.where(
        workday,
        _bump(hour, 8.0, 1.2) + 0.85 * _bump(hour, 17.5, 1.6),
        0.35 * _bump(hour, 13.0, 3.5),
    )
    daytime = _bump(hour, 13.5, 4.5)
    activity = 0.15 + 0.25 * daytime + rush  # about 0.15 at 03:00, 1.3 at 08:00 on weekdays
    exposure = 0.3 + fleet.traffic[i]

    no2 = (
        (fleet.no2_base[i] * (1.0 + 0.3 * winter) + 28.0 * exposure * activity)
        * np.exp(0.25 * local_no2)
        * np.exp(0.06 * white(2))
    )

    background = fleet.pm_scale[i] * (6.5 + 5.0 * winter) * np.exp(0.35 * weather_pm)
    pm25 = (background + 5.0 * exposure * activity * np.exp(0.2 * local_pm)) * np.exp(
        0.08 * white(0)
    )
    coarse = 2.0 + 6.0 * exposure * activity  # road dust rises with traffic
    pm10 = pm25 * fleet.pm10_ratio[i] + coarse * np.exp(0.1 * white(1))

    out = np.stack([pm25, pm10, no2, temperature, humidity], axis=1)
    out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    for m, d in enumerate(DECIMALS):
        out[:, m] = np.round(out[:, m], d)
    np.clip(out, RANGES[:, 0], RANGES[:, 1], out=out)
    np.maximum(out[:, 1], out[:, 0], out=out[:, 1])  # pm10 includes pm2.5
    return out


# --- MQTT messages ------------------------------------------------------------------------
class Encoder:
    """Turns ticks into ``(topic, payload)`` MQTT messages of wire format v1.

    ``batch``: one message per sensor, ``{"readings": [...]}`` with every metric.
    ``single``: one message per reading, ``{"metric": ..., "ts": ..., "value": ...}``.
    Payloads are built from a bytes template per message; the numbers are formatted by NumPy
    (shortest round-trip repr, always a valid JSON number since values are finite).

    With ``gateways`` (one gateway id per sensor) every message is published by the sensor's
    gateway instead: on ``<prefix>/gateways/<id>``, as ``{"sensors": [{"sensor": ...,
    "readings": [...]}]}`` holding the same readings.
    """

    def __init__(
        self,
        fleet: Fleet,
        prefix: str,
        mode: str = "batch",
        gateways: list[str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if gateways is not None and len(gateways) != len(fleet):
            raise ValueError("one gateway per sensor")
        self.fleet = fleet
        self.mode = mode
        self.topics = (
            [f"{prefix}/sensors/{sid}" for sid in fleet.ids]
            if gateways is None
            else [f"{prefix}/gateways/{g}" for g in gateways]
        )
        # Gateway form: the device payload wrapped in a one-group gateway batch.
        self._heads = (
            None
            if gateways is None
            else [b'{"sensors":[{"sensor":"%s","readings":' % sid.encode() for sid in fleet.ids]
        )
        self._singles = [b'{"metric":"%s","ts":%%d,"value":%%b}' % m.encode() for m in METRICS]
        self._batch = (
            b'{"readings":[' + b",".join(self._singles) + b"]}"
        )  # ts and value for each metric, in METRICS order

    @property
    def readings_per_message(self) -> int:
        return len(METRICS) if self.mode == "batch" else 1

    def encode(
        self, idx: npt.ArrayLike, ts_ms: npt.ArrayLike, values: FloatArray
    ) -> list[tuple[str, bytes]]:
        """Messages for the readings ``values`` (from :func:`readings`) of sensors ``idx``."""
        out = self._encode_device(idx, ts_ms, values)
        heads = self._heads
        if heads is None:
            return out
        i = np.atleast_1d(np.asarray(idx, dtype=np.intp)).tolist()
        per = len(METRICS)  # single mode: one message per metric of each sensor
        if self.mode == "batch":  # {"readings":[...]} -> head + [...] + }]}
            return [(t, heads[s] + p[12:] + b"]}") for s, (t, p) in zip(i, out, strict=True)]
        return [  # one reading -> head + [reading] + }]}
            (t, heads[i[k // per]] + b"[" + p + b"]}]}") for k, (t, p) in enumerate(out)
        ]

    def _encode_device(
        self, idx: npt.ArrayLike, ts_ms: npt.ArrayLike, values: FloatArray
    ) -> list[tuple[str, bytes]]:
        i = np.atleast_1d(np.asarray(idx, dtype=np.intp))
        ts = np.broadcast_to(np.asarray(ts_ms, dtype=np.int64), i.shape)
        if not np.isfinite(values).all():
            raise ValueError("readings must be finite to be sent")
        text = values.astype("S24").tolist()  # list of rows of b"12.3"
        topics = self.topics
        ts_list = ts.tolist()
        if self.mode == "batch":
            tmpl = self._batch
            return [
                (
                    topics[s],
                    tmpl % (t, v[0], t, v[1], t, v[2], t, v[3], t, v[4]),
                )
                for s, t, v in zip(i.tolist(), ts_list, text, strict=True)
            ]
        out: list[tuple[str, bytes]] = []
        singles = self._singles
        for s, t, v in zip(i.tolist(), ts_list, text, strict=True):
            topic = topics[s]
            out.extend((topic, singles[m] % (t, v[m])) for m in range(len(METRICS)))
        return out

    def tick(self, idx: npt.ArrayLike, ts_ms: npt.ArrayLike) -> list[tuple[str, bytes]]:
        """Compute and encode the readings of sensors ``idx`` at ``ts_ms``."""
        return self.encode(idx, ts_ms, readings(self.fleet, idx, ts_ms))

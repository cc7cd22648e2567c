"""Vectorized validation of a decoded batch: accepted readings and rejects with a reason.

Pure: takes a frame and the current time, returns frames. The gateway already validated each
message's shape; this is the processor's own check of what only it can judge in bulk (the
event-time window, calendar validity of timestamps, each metric against the sensor's type in
the registry) and a guard against any other producer.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from meetnet.wire import METRIC_PATTERN, SENSOR_ID_PATTERN, Reason


@dataclass(frozen=True)
class Limits:
    max_age_ms: int
    max_skew_ms: int


@dataclass(frozen=True)
class Registry:
    """What the registry allows, as join-ready frames; build with :meth:`build`."""

    sensors: pl.DataFrame  # sensor, _sensor_known: every registered sensor id, once
    # sensor, metric, _metric_known: the metrics of each sensor's type. Further columns of a
    # pair (the processor adds its series id, see with_pair_columns) are passed on to the
    # accepted readings, so that the processor needs no second join on (sensor, metric).
    pairs: pl.DataFrame

    @classmethod
    def build(cls, sensors: pl.DataFrame, pairs: pl.DataFrame) -> Registry:
        """From a frame of sensor ids and one of allowed (sensor, metric) pairs
        (``store.catalog.RegistryCache.frames``). Made unique: a duplicate would duplicate
        readings in the joins."""
        return cls(
            sensors.select("sensor").unique().with_columns(_sensor_known=pl.lit(True)),
            pairs.select("sensor", "metric").unique().with_columns(_metric_known=pl.lit(True)),
        )

    def with_pair_columns(self, extra: pl.DataFrame) -> Registry:
        """The same registry with ``extra``'s columns (keyed by sensor, metric; null where
        ``extra`` has no row) added to every pair."""
        return Registry(self.sensors, self.pairs.join(extra, on=["sensor", "metric"], how="left"))

    @property
    def pair_columns(self) -> list[str]:
        return [c for c in self.pairs.columns if c not in ("sensor", "metric", "_metric_known")]


REGISTRY_REASONS = frozenset({Reason.UNKNOWN_SENSOR.value, Reason.UNKNOWN_METRIC.value})


@dataclass(frozen=True)
class Checked:
    ok: pl.DataFrame  # rec, sensor, metric, ts_us (Int64, UTC), value, rx
    rejects: pl.DataFrame  # rec, rx, sensor, metric, ts, value, reason, detail


def parse_ts_us(ts: pl.Expr) -> pl.Expr:
    """Wire timestamps (epoch-ms digits or RFC 3339 with offset) -> Int64 microseconds UTC."""
    is_ms = ts.str.contains(r"^\d{1,15}$")
    norm = (ts.str.slice(0, 10) + "T" + ts.str.slice(11).str.to_uppercase()).str.replace(
        r"Z$", "+00:00"
    )
    rfc = norm.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", time_zone="UTC", strict=False, time_unit="us"
    ).dt.epoch("us")
    return pl.when(is_ms).then(ts.cast(pl.Int64, strict=False) * 1000).otherwise(rfc)


def _details(limits: Limits) -> dict[str, str]:
    return {
        Reason.INVALID_SENSOR_ID.value: "sensor id: lowercase letters, digits, '-', '_'",
        Reason.INVALID_METRIC.value: f"metric must match {METRIC_PATTERN}",
        Reason.UNKNOWN_SENSOR.value: "sensor is not registered",
        Reason.UNKNOWN_METRIC.value: "metric is not one of the metrics of the sensor's type",
        Reason.NON_FINITE_VALUE.value: "value must be a finite number",
        Reason.INVALID_TIMESTAMP.value: "ts is not a valid date-time (calendar or format)",
        Reason.TIMESTAMP_OUT_OF_RANGE.value: (
            f"ts outside the accepted window [now - {limits.max_age_ms // 1000} s, "
            f"now + {limits.max_skew_ms // 1000} s]"
        ),
    }


def _mark_registry(df: pl.DataFrame, registry: Registry) -> pl.DataFrame:
    """Add boolean columns ``_sensor_known`` and ``_metric_known`` by left joins.

    A known (sensor, metric) pair implies a known sensor (pairs come from registered
    sensors), so when every pair is known -- the usual batch -- the sensor join is skipped:
    it cost as much as the rest of the validation."""
    df = df.join(registry.pairs, on=["sensor", "metric"], how="left", maintain_order="left")
    df = df.with_columns(pl.col("_metric_known").fill_null(False))
    if df["_metric_known"].all():
        return df.with_columns(_sensor_known=pl.lit(True))
    return df.join(registry.sensors, on="sensor", how="left", maintain_order="left").with_columns(
        pl.col("_sensor_known").fill_null(False)
    )


def registry_misses(checked: Checked) -> list[str]:
    """Sensor ids rejected for a registry reason: to be confirmed by a fresh lookup before the
    rejection stands (the registry may have changed a moment ago)."""
    rej = checked.rejects
    if rej.height == 0:
        return []
    hit = rej.filter(pl.col("reason").is_in(list(REGISTRY_REASONS)))
    return hit["sensor"].unique().sort().to_list()


def check(
    frame: pl.DataFrame, now_ms: int, limits: Limits, registry: Registry | None = None
) -> Checked:
    """Accepted readings and rejects. With ``registry``, a reading of an unregistered sensor
    is ``unknown_sensor`` and one whose metric is not in its sensor's type ``unknown_metric``."""
    lo_us = (now_ms - limits.max_age_ms) * 1000
    hi_us = (now_ms + limits.max_skew_ms) * 1000
    df = frame.with_columns(parse_ts_us(pl.col("ts")).alias("ts_us"))
    if registry is not None:
        df = _mark_registry(df, registry)
        sensor_known, metric_known = pl.col("_sensor_known"), pl.col("_metric_known")
    else:
        sensor_known = metric_known = pl.lit(True)
    reason = (
        pl.when(~pl.col("sensor").fill_null("").str.contains(SENSOR_ID_PATTERN))
        .then(pl.lit(Reason.INVALID_SENSOR_ID.value))
        .when(~pl.col("metric").fill_null("").str.contains(METRIC_PATTERN))
        .then(pl.lit(Reason.INVALID_METRIC.value))
        .when(~sensor_known)
        .then(pl.lit(Reason.UNKNOWN_SENSOR.value))
        .when(~metric_known)
        .then(pl.lit(Reason.UNKNOWN_METRIC.value))
        .when(pl.col("value").is_null() | ~pl.col("value").is_finite())
        .then(pl.lit(Reason.NON_FINITE_VALUE.value))
        .when(pl.col("ts_us").is_null())
        .then(pl.lit(Reason.INVALID_TIMESTAMP.value))
        .when((pl.col("ts_us") < lo_us) | (pl.col("ts_us") > hi_us))
        .then(pl.lit(Reason.TIMESTAMP_OUT_OF_RANGE.value))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    df = df.with_columns(reason.alias("reason"))
    extra = registry.pair_columns if registry is not None else []
    ok = df.filter(pl.col("reason").is_null()).select(
        "rec", "sensor", "metric", "ts_us", "value", "rx", *extra
    )
    rejects = df.filter(pl.col("reason").is_not_null()).select(
        "rec",
        "rx",
        "sensor",
        "metric",
        "ts",
        "value",
        "reason",
        pl.col("reason")
        .replace_strict(_details(limits), default=pl.col("reason"), return_dtype=pl.String)
        .alias("detail"),
    )
    return Checked(ok, rejects)

"""Small builders for detector tests: a registry, batches, and the final state of each flag."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl

from stream.detect import Detection, Detector, DetectorConfig

T0 = 1_798_761_600_000_000  # 2027-01-01T00:00:00Z in µs
MIN = 60_000_000


def registry(
    sensors: Iterable[str],
    metric: str = "pm25",
    *,
    low: float = 0.0,
    high: float = 1000.0,
    interval_s: float = 60.0,
    detection: str | None = None,
) -> pl.DataFrame:
    sensors = list(sensors)
    return pl.DataFrame(
        {
            "sensor": sensors,
            "metric": metric,
            "min_value": low,
            "max_value": high,
            "interval_s": interval_s,
            "detection": detection,
        },
        schema_overrides={"detection": pl.String},
    )


def detector(reg: pl.DataFrame, config: DetectorConfig | None = None) -> Detector:
    det = Detector(config)
    det.update_registry(reg)
    return det


def noisy(n: int, seed: int = 0, level: float = 20.0, sd: float = 1.0) -> np.ndarray:
    """A plain noisy series (AR(1)-free, rounded like a sensor)."""
    return np.round(level + np.random.default_rng(seed).normal(0, sd, n), 1)


def batch(
    sensor: str | Sequence[str], ts_us: np.ndarray, values: np.ndarray, metric: str = "pm25"
) -> pl.DataFrame:
    return pl.DataFrame(
        {"sensor": sensor, "metric": metric, "ts_us": ts_us, "value": values},
        schema_overrides={"ts_us": pl.Int64, "value": pl.Float64},
    )


def minutes(n: int, start: int = 0) -> np.ndarray:
    return T0 + (start + np.arange(n, dtype=np.int64)) * MIN


def final(results: Iterable[Detection]) -> pl.DataFrame:
    """The last state of every flag over several batches (opened/resolved are per batch)."""
    frames = [r.flags for r in results if r.flags.height]
    if not frames:
        return pl.DataFrame()
    return (
        pl.concat(frames)
        .drop("opened", "opened_at", "resolved")
        .unique("anomaly_id", keep="last", maintain_order=True)
        .sort("anomaly_id")
    )


def kinds(flags: pl.DataFrame) -> list[str]:
    return [] if flags.height == 0 else flags["kind"].to_list()

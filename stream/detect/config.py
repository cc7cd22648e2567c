"""Detection settings: the structural ones (global, fixed per detector) and the thresholds
(per sensor type, with per-metric overrides), plus a small table of defaults per metric kind.

The thresholds schema is the schema of ``sensor_types.detection`` (jsonb) and of the
``meetnet detect --config FILE`` file (JSON or TOML); ``{}`` means "the defaults". Every key
is optional; unknown keys are errors, so a typo never silently leaves a default in place::

    {
      "min_scale": 0.5,
      "range":       {"enabled": true, "min": null, "max": null, "resolve_after": 3},
      "spike":       {"z": 6.0, "max_readings": 3, "confirm_readings": 5, "resolve_after": 10},
      "level_shift": {"z": 4.0, "min_readings": 6, "resolve_after": 8},
      "flatline":    {"min_readings": 20, "min_duration_s": 0, "tolerance": 0.0},
      "noise":       {"ratio": 3.0, "resolve_after": 8},
      "silence":     {"factor": 3.0, "min_s": 0, "interval_s": null},
      "metrics":     {"temperature": {"min_scale": 0.05, "spike": {"z": 8}}}
    }

Precedence, lowest first: built-in defaults, the metric kind's defaults (:data:`METRIC_DEFAULTS`,
by metric name), the type's top-level keys, the type's ``metrics.<name>`` keys. The physical
range and the expected interval come from the registry (``sensor_type_metrics``); ``range.min``
/ ``range.max`` / ``silence.interval_s`` given in the config override them.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

KINDS = ("range", "spike", "level_shift", "flatline", "noise", "silence")
# Kinds handled by the generic episode machinery, in this order (array columns of the state).
EPISODE_KINDS = KINDS[:5]


class ConfigError(ValueError):
    """A detection config that cannot be used; the message says which key and why."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True


class RangeRule(_Rule):
    min: float | None = Field(None, description="Overrides the registry's physical minimum.")
    max: float | None = Field(None, description="Overrides the registry's physical maximum.")
    resolve_after: int = Field(3, ge=1, le=10_000, description="Clean readings that resolve it.")


class SpikeRule(_Rule):
    z: float = Field(6.0, gt=0, description="Robust z-score (|x - median| / scale) of a spike.")
    max_readings: int = Field(3, ge=1, le=3, description="Longest excursion still a spike.")
    confirm_readings: int = Field(
        5,
        ge=0,
        le=100,
        description="Calm readings after a spike that confirm it (a burst of "
        "noise starts with what looks like a spike); the alert comes this many readings later.",
    )
    resolve_after: int = Field(10, ge=1, le=10_000)


class LevelShiftRule(_Rule):
    z: float = Field(4.0, gt=0, description="Robust z-score a shifted level keeps.")
    min_readings: int = Field(6, ge=4, le=10_000, description="Readings it must persist.")
    resolve_after: int = Field(8, ge=1, le=10_000)


class FlatlineRule(_Rule):
    min_readings: int = Field(20, ge=2, le=10_000_000, description="Identical readings in a row.")
    min_duration_s: float = Field(0.0, ge=0, description="...lasting at least this long.")
    tolerance: float = Field(0.0, ge=0, description="Readings this close count as identical.")


class NoiseRule(_Rule):
    ratio: float = Field(3.0, gt=1, description="Short-term noise / usual noise of the series.")
    resolve_after: int = Field(8, ge=1, le=10_000)


class SilenceRule(_Rule):
    factor: float = Field(3.0, ge=1, description="Silent after factor x the expected interval.")
    min_s: float = Field(0.0, ge=0, description="...and at least this many seconds.")
    interval_s: float | None = Field(
        None, gt=0, description="Expected interval; overrides the registry's interval_s."
    )


class Rules(BaseModel):
    """The effective thresholds of one series (a sensor type's config applied to one metric)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_scale: float = Field(
        0.0,
        ge=0,
        description="Floor of the robust scale (metric units): below it, changes "
        "are not spikes. Set it to about the sensor's resolution.",
    )
    range: RangeRule = RangeRule()
    spike: SpikeRule = SpikeRule()
    level_shift: LevelShiftRule = LevelShiftRule()
    flatline: FlatlineRule = FlatlineRule()
    noise: NoiseRule = NoiseRule()
    silence: SilenceRule = SilenceRule()

    def version(self, structural: Structural) -> str:
        """A short stable hash of everything that decides the flags; stored with each flag."""
        doc = {"rules": self.model_dump(mode="json"), "structural": structural.as_dict()}
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return "d1-" + hashlib.sha256(blob).hexdigest()[:12]


class DetectionConfig(BaseModel):
    """A sensor type's ``detection`` document: thresholds and per-metric overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_scale: float | None = Field(None, ge=0)
    range: dict[str, Any] = {}
    spike: dict[str, Any] = {}
    level_shift: dict[str, Any] = {}
    flatline: dict[str, Any] = {}
    noise: dict[str, Any] = {}
    silence: dict[str, Any] = {}
    metrics: dict[str, dict[str, Any]] = {}

    @model_validator(mode="after")
    def _check(self) -> DetectionConfig:
        # Validate eagerly, so a bad document fails when it is loaded, not on the first reading.
        Rules.model_validate(_merge({}, self._top()))
        for metric, patch in self.metrics.items():
            try:
                Rules.model_validate(_merge(self._top(), patch))
            except ValidationError as e:
                raise ValueError(f"metrics.{metric}: {_describe(e)}") from None
        return self

    def _top(self) -> dict[str, Any]:
        d = self.model_dump(exclude={"metrics"}, exclude_none=True)
        return {k: v for k, v in d.items() if v != {}}

    def rules_for(self, metric: str) -> Rules:
        base = METRIC_DEFAULTS.get(metric, MetricDefaults()).rules
        patch = _merge(_merge(base, self._top()), self.metrics.get(metric, {}))
        return Rules.model_validate(patch)


@dataclass(frozen=True)
class MetricDefaults:
    """What is known about a metric by its name alone (used when the registry does not say)."""

    low: float = -math.inf
    high: float = math.inf
    rules: dict[str, Any] = field(default_factory=dict)


# Defaults per metric kind, by metric name. The ranges are physical limits of the quantity or of
# common sensors; min_scale is about the usual resolution, so quantised readings do not make
# every change a spike. Traffic counts and saturated humidity legitimately repeat for hours.
METRIC_DEFAULTS: dict[str, MetricDefaults] = {
    "pm25": MetricDefaults(0, 1000, {"min_scale": 0.5}),
    "pm10": MetricDefaults(0, 1000, {"min_scale": 0.5}),
    "no2": MetricDefaults(0, 1000, {"min_scale": 0.5}),
    "o3": MetricDefaults(0, 800, {"min_scale": 0.5}),
    "co2": MetricDefaults(0, 10_000, {"min_scale": 2.0}),
    "temperature": MetricDefaults(-40, 60, {"min_scale": 0.05}),
    "humidity": MetricDefaults(0, 100, {"min_scale": 0.2, "flatline": {"min_readings": 120}}),
    "pressure": MetricDefaults(870, 1085, {"min_scale": 0.05}),
    "laeq": MetricDefaults(20, 140, {"min_scale": 0.3}),
    "noise_level": MetricDefaults(20, 140, {"min_scale": 0.3}),
    "water_level": MetricDefaults(rules={"min_scale": 0.5}),
    "salinity": MetricDefaults(0, 45, {"min_scale": 0.05}),
    "conductivity": MetricDefaults(0, 100_000, {"min_scale": 1.0}),
    "vehicle_count": MetricDefaults(
        0, 10_000, {"min_scale": 1.0, "flatline": {"min_readings": 240}}
    ),
    "wind_speed": MetricDefaults(0, 75, {"min_scale": 0.1}),
}


@dataclass(frozen=True)
class Structural:
    """Settings that shape the state arrays; the same for every series of a detector.

    The baseline's scale is recomputed every ``block`` accepted readings from the last 4 blocks
    (the raw scale) and the last ``noise_blocks`` blocks (the usual scale); see
    :mod:`stream.detect.baseline`.
    """

    block: int = 8
    noise_blocks: int = 16
    # Event clock: this quantile of the live series' latest event times (robust to a minority of
    # sensors with fast clocks). Silence is judged at min(now, that watermark).
    watermark_quantile: float = 0.75
    # A stream-wide jump of event time (at least clock_jump_min_series series leaping this far
    # past the newest event time seen) restarts silence timers instead of flagging every sensor.
    clock_jump_s: float = 3600.0
    clock_jump_min_series: int = 2
    # Larger batches are processed in chunks of this many rows: memory stays bounded.
    max_chunk_rows: int = 262_144

    def __post_init__(self) -> None:
        if self.block not in (2, 4, 8, 16, 32, 64):
            raise ConfigError("block must be a power of two from 2 to 64 readings")
        if not 4 <= self.noise_blocks <= 256 or self.noise_blocks % 2:
            raise ConfigError("noise_blocks must be an even number from 4 to 256")
        if not 0 < self.watermark_quantile <= 1:
            raise ConfigError("watermark_quantile must be in (0, 1]")
        if self.clock_jump_s <= 0 or self.clock_jump_min_series < 1:
            raise ConfigError("clock_jump_s must be > 0 and clock_jump_min_series >= 1")
        if self.max_chunk_rows < 1024:
            raise ConfigError("max_chunk_rows must be at least 1024")

    def as_dict(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "noise_blocks": self.noise_blocks,
            "watermark_quantile": self.watermark_quantile,
            "clock_jump_s": self.clock_jump_s,
            "clock_jump_min_series": self.clock_jump_min_series,
        }


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(document)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_detection(doc: str | dict[str, Any] | None) -> DetectionConfig:
    """A ``detection`` document (JSON text or a dict; None or "" = defaults) -> config."""
    if doc is None or doc == "":
        return DetectionConfig()
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as e:
            raise ConfigError(f"detection config is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError("detection config must be a JSON object")
    try:
        return DetectionConfig.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(f"invalid detection config: {_describe(e)}") from None


def load_config_file(path: Path) -> DetectionConfig:
    """``--config FILE``: JSON, or TOML when the name ends in ``.toml``."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    if path.suffix.lower() == ".toml":
        try:
            return parse_detection(tomllib.loads(text))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return parse_detection(text)

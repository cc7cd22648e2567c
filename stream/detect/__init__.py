"""Anomaly detection on sensor readings: vectorized over batches, with per-series state that
survives restarts (snapshot / restore). See ``ARCHITECTURE.md`` ("Anomaly detection").

- :class:`DetectorConfig` / :class:`Detector`: the streaming detector (``process(batch, now)``);
- :mod:`stream.detect.config`: thresholds (the ``sensor_types.detection`` schema);
- :mod:`stream.detect.offline`: the same detector over one CSV series (``meetnet detect``);
- :mod:`stream.detect.alerts`: alert records for the alerts Kafka topic.
"""

from stream.detect.config import (
    KINDS,
    ConfigError,
    DetectionConfig,
    Rules,
    Structural,
    load_config_file,
    parse_detection,
)
from stream.detect.detector import REGISTRY_SCHEMA, Detection, Detector, DetectorConfig
from stream.detect.flags import FLAG_SCHEMA, TRANSITION_SCHEMA

__all__ = [
    "FLAG_SCHEMA",
    "KINDS",
    "REGISTRY_SCHEMA",
    "TRANSITION_SCHEMA",
    "ConfigError",
    "Detection",
    "DetectionConfig",
    "Detector",
    "DetectorConfig",
    "Rules",
    "Structural",
    "load_config_file",
    "parse_detection",
]

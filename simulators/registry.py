"""Register the simulated fleet in the sensor registry, so its readings are served like any
registered sensor's: one municipality per simulated city (by NIS code), one sensor type with
the simulator's metrics, one public sensor per simulated device. Idempotent."""

from __future__ import annotations

import logging
from typing import Final

import psycopg

from simulators.model import CITIES, METRICS, RANGES, UNITS, Fleet

log = logging.getLogger(__name__)

TYPE_ID: Final = "sim-air-box"
# Statbel NIS codes of the simulator's cities.
NIS_CODES: Final = {
    "antwerpen": ("11002", "Antwerpen"),
    "gent": ("44021", "Gent"),
    "brugge": ("31005", "Brugge"),
    "leuven": ("24062", "Leuven"),
    "mechelen": ("12025", "Mechelen"),
    "hasselt": ("71022", "Hasselt"),
}


def register_fleet(conn: psycopg.Connection, fleet: Fleet, interval_s: int) -> None:
    """Make sure the fleet's municipalities, type and sensors exist (existing rows are kept)."""
    cities = [(NIS_CODES[c.name][0], NIS_CODES[c.name][1], c.lat, c.lon) for c in CITIES]
    interval = max(1, min(interval_s, 604800))
    with conn.transaction():
        conn.execute(
            "INSERT INTO municipalities (nis_code, name, centroid_lat, centroid_lon)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[])"
            " ON CONFLICT DO NOTHING",
            [list(col) for col in zip(*cities, strict=True)],
        )
        conn.execute(
            "INSERT INTO sensor_types (type_id, name, description) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (TYPE_ID, "Simulated air-quality box", "meetnet simulate"),
        )
        conn.execute(
            "INSERT INTO sensor_type_metrics (type_id, metric, unit, min_value, max_value,"
            " interval_s) SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::float8[],"
            " %s::float8[], %s::int[]) ON CONFLICT DO NOTHING",
            (
                TYPE_ID,
                list(METRICS),
                [UNITS[m] for m in METRICS],
                RANGES[:, 0].tolist(),
                RANGES[:, 1].tolist(),
                [interval] * len(METRICS),
            ),
        )
        cur = conn.execute(
            "INSERT INTO sensors (sensor_id, municipality, type_id, name, lat, lon, visibility)"
            " SELECT i, m, %s, n, la, lo, 'public' FROM unnest(%s::text[], %s::text[],"
            " %s::text[], %s::float8[], %s::float8[]) AS u(i, m, n, la, lo)"
            " ON CONFLICT DO NOTHING",
            (
                TYPE_ID,
                list(fleet.ids),
                [NIS_CODES[fleet.city_name(i)][0] for i in range(len(fleet))],
                [f"simulated, {fleet.city_name(i)}" for i in range(len(fleet))],
                fleet.lat.tolist(),
                fleet.lon.tolist(),
            ),
        )
    log.info("registered simulated sensors", extra={"new": cur.rowcount, "sensors": len(fleet)})

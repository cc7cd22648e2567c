"""The simulated fleet in the registry: its municipalities, sensor type, gateways and sensors.

The simulator publishes as field gateways, one per city (``sim-gw-<city>``), each owning the
simulated sensors of its city, so it needs one MQTT connection per city rather than one per
sensor, and every message passes the same identity checks as a real gateway's. Registration is
idempotent: the type and municipalities are added when missing; the simulator's own sensors
(of its sensor type) are moved to the city the current fleet puts them in. Simulated sensors
are public (open data), so ``make up`` serves them to anonymous readers.
"""

from __future__ import annotations

import psycopg

from simulators.model import CITIES, METRICS, RANGES, UNITS, Fleet
from store import credentials

SENSOR_TYPE = "sim-air-quality"
# Official NIS codes (Statbel) of the simulated cities.
NIS_CODES = {
    "antwerpen": "11002",
    "gent": "44021",
    "brugge": "31005",
    "leuven": "24062",
    "mechelen": "12025",
    "hasselt": "71022",
}
NOMINAL_INTERVAL_S = 60  # the type's expected reporting interval (the simulator is faster)


def gateway_id(city: str) -> str:
    return f"sim-gw-{city}"


def fleet_gateways(fleet: Fleet) -> list[str]:
    """The gateway of each sensor of ``fleet``, in fleet order."""
    return [gateway_id(fleet.city_name(i)) for i in range(len(fleet))]


def register_fleet(conn: psycopg.Connection, fleet: Fleet) -> list[str]:
    """Register everything ``fleet`` publishes for; returns each sensor's gateway id."""
    gateways = fleet_gateways(fleet)
    cities = sorted({CITIES[int(c)].name for c in fleet.city})
    with conn.transaction():
        conn.execute(
            "INSERT INTO municipalities (nis_code, name, centroid_lat, centroid_lon) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[]) "
            "ON CONFLICT DO NOTHING",
            (
                [NIS_CODES[c.name] for c in CITIES],
                [c.name.title() for c in CITIES],
                [c.lat for c in CITIES],
                [c.lon for c in CITIES],
            ),
        )
        conn.execute(
            "INSERT INTO sensor_types (type_id, name, description) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (SENSOR_TYPE, "Simulated air-quality box", "meetnet's sensor simulator"),
        )
        conn.execute(
            "INSERT INTO sensor_type_metrics "
            "(type_id, metric, unit, min_value, max_value, interval_s) "
            "SELECT %s, m, u, lo, hi, %s FROM unnest(%s::text[], %s::text[], %s::float8[], "
            "%s::float8[]) AS t(m, u, lo, hi) ON CONFLICT DO NOTHING",
            (
                SENSOR_TYPE,
                NOMINAL_INTERVAL_S,
                list(METRICS),
                [UNITS[m] for m in METRICS],
                RANGES[:, 0].tolist(),
                RANGES[:, 1].tolist(),
            ),
        )
        conn.execute(
            "INSERT INTO gateways (gateway_id, municipality, name) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) "
            "ON CONFLICT (gateway_id) DO UPDATE SET status = 'active' "
            "WHERE gateways.status <> 'active'",
            (
                [gateway_id(c) for c in cities],
                [NIS_CODES[c] for c in cities],
                [f"Simulated gateway {c.title()}" for c in cities],
            ),
        )
        conn.execute(
            "INSERT INTO sensors (sensor_id, municipality, type_id, gateway_id, name, lat, lon, "
            "visibility) SELECT s, m, %s, g, s, la, lo, 'public' "
            "FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[]) "
            "AS u(s, m, g, la, lo) "
            "ON CONFLICT (sensor_id) DO UPDATE SET municipality = EXCLUDED.municipality, "
            "gateway_id = EXCLUDED.gateway_id, lat = EXCLUDED.lat, lon = EXCLUDED.lon, "
            "status = 'active' "
            "WHERE sensors.type_id = EXCLUDED.type_id AND (sensors.gateway_id, "
            "sensors.municipality, sensors.lat, sensors.lon, sensors.status) IS DISTINCT FROM "
            "(EXCLUDED.gateway_id, EXCLUDED.municipality, EXCLUDED.lat, EXCLUDED.lon, 'active')",
            (
                SENSOR_TYPE,
                list(fleet.ids),
                [NIS_CODES[fleet.city_name(i)] for i in range(len(fleet))],
                gateways,
                fleet.lat.tolist(),
                fleet.lon.tolist(),
            ),
        )
    return gateways


def issue_gateway_credentials(conn: psycopg.Connection, gateways: list[str]) -> dict[str, str]:
    """New MQTT passwords for the simulator's gateways (rotating the previous ones), in one
    transaction; kept in memory by the simulator only."""
    with conn.transaction():
        return {g: credentials.issue(conn, gateway_id=g) for g in sorted(set(gateways))}

"""simulators/registry.py: the simulated fleet is registered, public, and only once."""

from __future__ import annotations

import psycopg
import pytest

from simulators.model import make_fleet
from simulators.registry import SENSOR_TYPE, register_fleet

pytestmark = pytest.mark.integration


def test_the_fleet_is_registered_public_in_its_cities_and_registering_again_adds_nothing(
    db: psycopg.Connection, migrated_db: str
) -> None:
    fleet = make_fleet(40)
    with psycopg.connect(migrated_db) as conn:
        register_fleet(conn, fleet)
        register_fleet(conn, fleet)
    rows = db.execute(
        "SELECT sensor_id, municipality, visibility, type_id FROM sensors ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rows] == list(fleet.ids)
    assert {r[2] for r in rows} == {"public"} and {r[3] for r in rows} == {SENSOR_TYPE}
    assert {r[1] for r in rows} <= {"11002", "44021", "31005", "24062", "12025", "71022"}
    units = dict(db.execute("SELECT metric, unit FROM sensor_type_metrics").fetchall())
    assert units == {
        "pm25": "ug/m3",
        "pm10": "ug/m3",
        "no2": "ug/m3",
        "temperature": "degC",
        "humidity": "%",
    }

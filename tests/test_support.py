"""The tests' own registry helper registers what it is asked to, idempotently."""

from __future__ import annotations

import psycopg
import pytest

from tests.support import register_sensors

pytestmark = pytest.mark.integration


def test_register_sensors_is_idempotent_and_complete(db: psycopg.Connection) -> None:
    register_sensors(db, ["a-1", "a-2"], gateway="gw-1", metrics=["pm25", "no2"])
    register_sensors(db, ["a-2", "a-3"], gateway="gw-1", metrics=["pm25", "no2"])
    rows = db.execute(
        "SELECT sensor_id, gateway_id, municipality FROM sensors ORDER BY sensor_id"
    ).fetchall()
    assert rows == [("a-1", "gw-1", "44021"), ("a-2", "gw-1", "44021"), ("a-3", "gw-1", "44021")]
    metrics = db.execute(
        "SELECT metric FROM sensor_type_metrics WHERE type_id = 'test-box' ORDER BY metric"
    ).fetchall()
    assert metrics == [("no2",), ("pm25",)]

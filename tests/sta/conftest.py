"""A registry and readings for the SensorThings and linked-data tests: two municipalities,
public and private sensors of two types, three days of readings every 10 minutes, and a key
of every role."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from meetnet.admin import create_key
from meetnet.settings import Settings
from store import rollups
from tests.conftest import DATA_TABLES

GENT, ANTWERPEN = "44021", "11002"
STEP = timedelta(minutes=10)
DAYS = 3
# Readings end two hours ago, on a 10-minute boundary.
END = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
END = END - timedelta(minutes=END.minute % 10)
START = END - timedelta(days=DAYS)
N_READINGS = int((END - START) / STEP)

# sensor: (municipality, visibility, type, lat, lon, height)
SENSORS: dict[str, tuple[str, str, str, float, float, float | None]] = {
    "gent-air-1": (GENT, "public", "air-box", 51.05, 3.72, None),
    "gent-air-2": (GENT, "public", "air-box", 51.06, 3.70, 3.5),
    "gent-noise-1": (GENT, "public", "noise-box", 51.04, 3.73, None),
    "gent-priv": (GENT, "private", "air-box", 51.055, 3.725, None),
    "antw-air-1": (ANTWERPEN, "public", "air-box", 51.22, 4.40, None),
    "antw-priv": (ANTWERPEN, "private", "air-box", 51.21, 4.41, None),
}
TYPES = {
    "air-box": [("pm25", "ug/m3", 0, 1000), ("temperature", "degC", -40, 60)],
    "noise-box": [("laeq", "dB(A)", 0, 140)],
}
PUBLIC = [s for s, v in SENSORS.items() if v[1] == "public"]


def value_of(sensor: str, metric: str, i: int) -> float:
    """A distinct, predictable value per reading: the series' index plus i / 1000."""
    base = sorted(SENSORS).index(sensor) * 10 + ["pm25", "temperature", "laeq"].index(metric)
    return float(base) + i / 1000


@dataclass
class StaWorld:
    client: TestClient
    db: psycopg.Connection
    keys: dict[str, str] = field(default_factory=dict)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"} if who != "anonymous" else {}

    def get(self, url: str, who: str = "anonymous", **kw: Any) -> Any:
        return self.client.get(url, headers={**self.h(who), **kw.pop("headers", {})}, **kw)

    def ok(self, url: str, who: str = "anonymous", **kw: Any) -> Any:
        r = self.get(url, who, **kw)
        assert r.status_code == 200, (url, r.status_code, r.text)
        return r.json()


def populate(db: psycopg.Connection, settings: Settings) -> dict[str, str]:
    keys = {"admin": create_key(settings, "admin", None, "tests")[1]}
    with db.transaction():
        for nis, name in ((GENT, "Gent"), (ANTWERPEN, "Antwerpen")):
            db.execute("INSERT INTO municipalities (nis_code, name) VALUES (%s, %s)", (nis, name))
        for type_id, metrics in TYPES.items():
            db.execute(
                "INSERT INTO sensor_types (type_id, name, description) VALUES (%s, %s, %s)",
                (type_id, f"type {type_id}", f"description of {type_id}"),
            )
            for metric, unit, lo, hi in metrics:
                db.execute(
                    "INSERT INTO sensor_type_metrics (type_id, metric, unit, min_value,"
                    " max_value, interval_s) VALUES (%s, %s, %s, %s, %s, 600)",
                    (type_id, metric, unit, lo, hi),
                )
        for sid, (nis, vis, type_id, lat, lon, height) in SENSORS.items():
            db.execute(
                "INSERT INTO sensors (sensor_id, municipality, type_id, name, lat, lon, height_m,"
                " visibility, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (sid, nis, type_id, f"name {sid}", lat, lon, height, vis, '{"street": "x"}'),
            )
            for metric, *_ in TYPES[type_id]:
                (series_id,) = db.execute(
                    "INSERT INTO series (sensor_id, metric) VALUES (%s, %s) RETURNING series_id",
                    (sid, metric),
                ).fetchone()  # type: ignore[misc]
                with db.cursor().copy("COPY readings (series_id, ts, value) FROM STDIN") as cp:
                    for i in range(N_READINGS):
                        cp.write_row((series_id, START + i * STEP, value_of(sid, metric, i)))
    asyncio.run(_rebuild_rollups(settings))
    for who, role, nis in (
        ("gent", "municipality", GENT),
        ("antwerpen", "municipality", ANTWERPEN),
        ("reader", "reader", None),
    ):
        keys[who] = create_key(settings, role, nis, who)[1]
    return keys


async def _rebuild_rollups(settings: Settings) -> None:
    """The readings were COPYed straight into the table: compute their rollups, as the
    processor would have (meetnet rollups rebuild)."""
    async with await psycopg.AsyncConnection.connect(settings.dsn) as conn:
        await rollups.rebuild(conn)


@pytest.fixture(scope="module")
def sta_ro(migrated_db: str, base_settings: Settings) -> Iterator[StaWorld]:
    """The same world, built once per module, for tests that only read."""
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE")
        keys = populate(conn, base_settings)
        with TestClient(create_app(base_settings)) as client:
            yield StaWorld(client, conn, keys)


@pytest.fixture
def sta_client(base_settings: Settings, db: psycopg.Connection) -> Iterator[TestClient]:
    with TestClient(create_app(base_settings)) as c:
        yield c


@pytest.fixture
def sta(sta_client: TestClient, db: psycopg.Connection, base_settings: Settings) -> StaWorld:
    return StaWorld(sta_client, db, populate(db, base_settings))

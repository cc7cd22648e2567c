"""A small registry for the API tests: two municipalities with public and private sensors,
gateways, readings, and a key of every role, all made through the API itself."""

from __future__ import annotations

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

GENT, ANTWERPEN = "44021", "11002"
AIR_TYPE = {
    "type_id": "air-box",
    "name": "Air-quality box",
    "metrics": [
        {"name": "pm25", "unit": "ug/m3", "min": 0, "max": 1000, "interval_s": 60},
        {"name": "temperature", "unit": "degC", "min": -40, "max": 60, "interval_s": 60},
    ],
}
READING_TS = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sensor_body(sensor_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "sensor_id": sensor_id,
        "type": "air-box",
        "location": {"lat": 51.05, "lon": 3.72},
        **extra,
    }


@dataclass
class World:
    client: TestClient
    db: psycopg.Connection
    keys: dict[str, str] = field(default_factory=dict)  # admin, gent, antwerpen, reader
    passwords: list[str] = field(default_factory=list)

    def h(self, who: str) -> dict[str, str]:
        return bearer(self.keys[who]) if who != "anonymous" else {}

    def call(self, who: str, method: str, url: str, **kw: Any) -> Any:
        return self.client.request(
            method, url, headers={**self.h(who), **kw.pop("headers", {})}, **kw
        )

    def row(self, table: str, key_col: str, key: str) -> tuple[Any, ...] | None:
        from psycopg import sql

        return self.db.execute(
            sql.SQL("SELECT * FROM {} WHERE {} = %s").format(
                sql.Identifier(table), sql.Identifier(key_col)
            ),
            (key,),
        ).fetchone()


# The private data of each municipality: a test that finds one of these markers in a response
# to another municipality has found a leak.
PRIVATE_MARKER = {GENT: "gent-private-marker", ANTWERPEN: "antwerpen-private-marker"}

SENSORS = {
    # id: (municipality, visibility)
    "gent-pub": (GENT, "public"),
    "gent-priv": (GENT, "private"),
    "antw-pub": (ANTWERPEN, "public"),
    "antw-priv": (ANTWERPEN, "private"),
}
GATEWAYS = {"gent-gw": GENT, "antw-gw": ANTWERPEN}


def build_world(client: TestClient, db: psycopg.Connection, settings: Settings) -> World:
    _, admin = create_key(settings, "admin", None, "tests")
    w = World(client, db, {"admin": admin})
    for nis, name in ((GENT, "Gent"), (ANTWERPEN, "Antwerpen")):
        r = w.call("admin", "POST", "/v1/municipalities", json={"nis_code": nis, "name": name})
        assert r.status_code == 201, r.text
    assert w.call("admin", "POST", "/v1/sensor-types", json=AIR_TYPE).status_code == 201
    for who, body in (
        ("gent", {"role": "municipality", "municipality": GENT}),
        ("antwerpen", {"role": "municipality", "municipality": ANTWERPEN}),
        ("reader", {"role": "reader"}),
    ):
        r = w.call("admin", "POST", "/v1/keys", json=body)
        assert r.status_code == 201, r.text
        w.keys[who] = r.json()["key"]
    owner_key = {GENT: "gent", ANTWERPEN: "antwerpen"}
    for gw, nis in GATEWAYS.items():
        r = w.call(
            owner_key[nis],
            "POST",
            "/v1/gateways",
            json={
                "gateway_id": gw,
                "name": PRIVATE_MARKER[nis],
                "metadata": {"m": PRIVATE_MARKER[nis]},
            },
        )
        assert r.status_code == 201, r.text
    for sid, (nis, vis) in SENSORS.items():
        marker = PRIVATE_MARKER[nis] if vis == "private" else f"public {sid}"
        body = sensor_body(
            sid,
            visibility=vis,
            name=marker,
            metadata={"note": marker},
            gateway_id=next(g for g, n in GATEWAYS.items() if n == nis),
        )
        r = w.call(owner_key[nis], "POST", "/v1/sensors", json=body)
        assert r.status_code == 201, r.text
        r = w.call(owner_key[nis], "POST", f"/v1/sensors/{sid}/credentials")
        assert r.status_code == 201, r.text
        w.passwords.append(r.json()["password"])
        series = db.execute(
            "INSERT INTO series (sensor_id, metric) VALUES (%s, 'pm25') RETURNING series_id", (sid,)
        ).fetchone()
        assert series is not None
        # A value that identifies the sensor: 44021.5 for Gent's private sensor, ...
        value = float(nis) + (0.5 if vis == "private" else 0.25)
        db.execute(
            "INSERT INTO readings (series_id, ts, value) VALUES (%s, %s, %s)",
            (series[0], READING_TS, value),
        )
    return w


@pytest.fixture
def client(base_settings: Settings, db: psycopg.Connection) -> Iterator[TestClient]:
    with TestClient(create_app(base_settings)) as c:
        yield c


@pytest.fixture
def world(client: TestClient, db: psycopg.Connection, base_settings: Settings) -> World:
    return build_world(client, db, base_settings)

"""Creating Observations through the SensorThings API goes through meetnet's ingest path: the
registry decides who may write, Kafka acknowledges before the 201, the real stream processor
stores the reading, and a replayed POST is stored once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.schemas import rfc3339_utc
from meetnet import procs, services
from meetnet.settings import Settings
from tests.sta.conftest import StaWorld, populate
from tests.support import start_worker, wait_until

pytestmark = pytest.mark.integration

R = "/sta/v1.1"


@pytest.fixture
def live(stack: Settings, db: psycopg.Connection, tmp_path: Path) -> Iterator[StaWorld]:
    """The test registry and readings, an API producing to this test's topics, and a real
    processor consuming them."""
    keys = populate(db, stack)
    processor = start_worker("processor", stack, tmp_path)
    try:
        with TestClient(create_app(stack)) as client:
            yield StaWorld(client, db, keys)
    finally:
        procs.stop(processor)


def post(w: StaWorld, url: str, body: Any, who: str = "gent") -> Any:
    return w.client.post(url, json=body, headers=w.h(who))


def stored(w: StaWorld, ds: str, ts: datetime) -> list[float]:
    sensor, metric = ds.split(":")
    rows = w.db.execute(
        "SELECT r.value FROM readings r JOIN series s USING (series_id)"
        " WHERE s.sensor_id = %s AND s.metric = %s AND r.ts = %s",
        (sensor, metric, ts),
    ).fetchall()
    return [r[0] for r in rows]


def test_posted_observation_is_stored_and_queryable_and_a_replay_is_stored_once(
    live: StaWorld, stack: Settings
) -> None:
    ts = datetime.now(UTC).replace(microsecond=250000) - timedelta(minutes=1)
    body = {
        "phenomenonTime": rfc3339_utc(ts),
        "result": 17.25,
        "Datastream": {"@iot.id": "gent-air-1:pm25"},
    }
    r = post(live, f"{R}/Observations", body)
    assert r.status_code == 201, r.text
    oid = f"gent-air-1:pm25:{rfc3339_utc(ts)}"
    location = f"http://testserver{R}/Observations('{oid}')"
    assert r.headers["Location"] == location
    assert r.json()["@iot.id"] == oid and r.json()["result"] == 17.25
    # the processor stores it; then the Location resolves
    path = location.removeprefix("http://testserver")
    wait_until(lambda: live.get(path).status_code == 200, 30, "the posted observation")
    assert live.ok(path)["result"] == 17.25
    # a replay (here with another result) is accepted again and stored once: first write wins
    again = post(live, f"{R}/Observations", {**body, "result": 99.0})
    assert again.status_code == 201 and again.headers["Location"] == location
    wait_until(lambda: asyncio.run(services.consumer_lag(stack)) == 0, 30, "the processor")
    assert stored(live, "gent-air-1:pm25", ts) == [17.25]
    # under a Datastream's path, linked to the sensor's own Feature of Interest, with a
    # resultTime equal to the phenomenonTime
    ts2 = ts + timedelta(seconds=1)
    r = post(
        live,
        f"{R}/Datastreams('gent-air-1:temperature')/Observations",
        {
            "phenomenonTime": rfc3339_utc(ts2),
            "resultTime": rfc3339_utc(ts2),
            "result": -3,
            "FeatureOfInterest": {"@iot.id": "gent-air-1"},
        },
    )
    assert r.status_code == 201, r.text
    wait_until(lambda: stored(live, "gent-air-1:temperature", ts2) == [-3.0], 30, "the reading")


def test_create_observations_data_array(live: StaWorld) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    rows = [[rfc3339_utc(base + timedelta(seconds=i)), 10 + i] for i in range(3)]
    rows.insert(2, [rfc3339_utc(base + timedelta(seconds=9)), "high"])
    r = post(
        live,
        f"{R}/CreateObservations",
        [
            {
                "Datastream": {"@iot.id": "gent-noise-1:laeq"},
                "components": ["phenomenonTime", "result"],
                "dataArray@iot.count": 4,
                "dataArray": rows,
            }
        ],
    )
    assert r.status_code == 201, r.text
    links = r.json()
    assert links[2] == "error" and "result must be a number" in r.headers["X-Meetnet-Errors"]
    expected = [f"http://testserver{R}/Observations('gent-noise-1:laeq:{row[0]}')" for row in rows]
    assert [x for i, x in enumerate(links) if i != 2] == [
        x for i, x in enumerate(expected) if i != 2
    ]
    wait_until(
        lambda: all(
            stored(live, "gent-noise-1:laeq", base + timedelta(seconds=i)) for i in range(3)
        ),
        30,
        "the data array",
    )
    assert stored(live, "gent-noise-1:laeq", base + timedelta(seconds=9)) == []


def ok_body(ds: str = "gent-air-1:pm25", **extra: Any) -> dict[str, Any]:
    ts = datetime.now(UTC) - timedelta(minutes=2)
    return {
        "phenomenonTime": rfc3339_utc(ts),
        "result": 1.5,
        "Datastream": {"@iot.id": ds},
        **extra,
    }


def test_post_refusals_say_why(sta: StaWorld) -> None:
    old = rfc3339_utc(datetime.now(UTC) - timedelta(days=120))
    future = rfc3339_utc(datetime.now(UTC) + timedelta(hours=1))
    cases: list[tuple[str, Any, str, int, str]] = [
        ("anonymous", ok_body(), "", 401, "needs the key"),
        ("reader", ok_body(), "", 403, "only that municipality"),
        ("antwerpen", ok_body(), "", 403, "belongs to a sensor of municipality 44021"),
        ("antwerpen", ok_body("gent-priv:pm25"), "", 404, "no Datastream"),
        ("gent", ok_body("gent-air-1:co2"), "", 404, "no Datastream"),
        ("gent", [ok_body()], "", 400, "one Observation as a JSON object"),
        ("gent", {"result": 1}, "", 400, "needs its Datastream"),
        ("gent", ok_body(Datastream={"name": "new"}), "", 400, "link to an existing entity"),
        ("gent", ok_body(result="12"), "", 400, "result must be a number"),
        ("gent", ok_body(result=True), "", 400, "result must be a number"),
        ("gent", ok_body(result=2**60), "", 400, "within ±"),
        ("gent", {**ok_body(), "result": None}, "", 400, "result must be a number"),
        ("gent", {k: v for k, v in ok_body().items() if k != "result"}, "", 400, "needs a result"),
        (
            "gent",
            ok_body(phenomenonTime="2026-01-01T00:00:00Z/2026-01-01T01:00:00Z"),
            "",
            400,
            "instant",
        ),
        ("gent", ok_body(phenomenonTime="2026-01-01T00:00:00"), "", 400, "with an offset"),
        ("gent", ok_body(phenomenonTime=old), "", 400, "outside the accepted window"),
        ("gent", ok_body(phenomenonTime=future), "", 400, "outside the accepted window"),
        ("gent", ok_body(resultTime=future), "", 400, "resultTime must be left out or equal"),
        (
            "gent",
            ok_body(FeatureOfInterest={"@iot.id": "gent-air-2"}),
            "",
            400,
            "leave it out or link",
        ),
        ("gent", ok_body(colour="red"), "", 400, "unknown Observation properties: colour"),
        ("gent", {**ok_body(), "@iot.id": "x"}, "", 400, "derived from its Datastream"),
        ("gent", ok_body(parameters={"a": 1}), "", 400, "does not store parameters"),
        (
            "gent",
            ok_body(),
            "Datastreams('gent-air-2:pm25')/",
            400,
            "another Datastream than the URL",
        ),
    ]
    for who, body, prefix, status, message in cases:
        r = sta.client.post(f"{R}/{prefix}Observations", json=body, headers=sta.h(who))
        assert r.status_code == status, (who, body, r.text)
        assert message in r.json()["message"], (body, r.json())
    r = sta.client.post(f"{R}/Observations", content=b"{nope", headers=sta.h("gent"))
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    sta.db.execute("UPDATE sensors SET status = 'retired' WHERE sensor_id = 'gent-air-2'")
    r = sta.client.post(f"{R}/Observations", json=ok_body("gent-air-2:pm25"), headers=sta.h("gent"))
    assert r.status_code == 409 and "retired" in r.json()["message"]
    r = sta.client.post(f"{R}/Things", json={"name": "x"}, headers=sta.h("admin"))
    assert r.status_code == 405


def test_kafka_unavailable_is_a_503_and_nothing_is_claimed(
    base_settings: Settings, sta: StaWorld
) -> None:
    settings = base_settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{procs.free_port()}"}
    )
    with TestClient(create_app(settings)) as client:
        r = client.post(f"{R}/Observations", json=ok_body(), headers=sta.h("gent"))
    assert r.status_code == 503, r.text
    assert "could not be handed to Kafka" in r.json()["message"]
    assert r.headers["Retry-After"] == "5"

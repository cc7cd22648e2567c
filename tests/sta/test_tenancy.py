"""The registry's one visibility rule holds in every SensorThings entity set and JSON-LD
document: another municipality's private sensors, their Datastreams, Observations, Locations
and Features of Interest do not exist for the caller (absent from lists, counts, expansions,
navigation and filters; 404 by id, with the message of an unknown id)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from api.schemas import rfc3339_utc
from tests.sta.conftest import ANTWERPEN, GENT, N_READINGS, SENSORS, START, TYPES, StaWorld

pytestmark = pytest.mark.integration

R = "/sta/v1.1"
CALLERS = ("anonymous", "reader", "gent", "antwerpen", "admin")
OWN = {"gent": GENT, "antwerpen": ANTWERPEN}


def visible(who: str) -> list[str]:
    return sorted(
        s
        for s, (nis, vis, *_) in SENSORS.items()
        if vis == "public" or who == "admin" or OWN.get(who) == nis
    )


def hidden(who: str) -> list[str]:
    return sorted(set(SENSORS) - set(visible(who)))


def datastreams(sensors: list[str]) -> list[str]:
    return sorted(f"{s}:{m}" for s in sensors for m, *_ in TYPES[SENSORS[s][2]])


def every(w: StaWorld, url: str, who: str) -> list[dict]:
    out, next_url = [], url
    while next_url:
        body = w.ok(next_url.removeprefix("http://testserver"), who)
        out += body["value"]
        next_url = body.get("@iot.nextLink")
    return out


@pytest.mark.parametrize("who", CALLERS)
def test_lists_and_counts_hold_exactly_the_visible_sensors(sta_ro: StaWorld, who: str) -> None:
    sensors = visible(who)
    for set_name in ("Things", "Locations", "HistoricalLocations", "FeaturesOfInterest"):
        body = sta_ro.ok(f"{R}/{set_name}?$count=true&$top=1000", who)
        assert sorted(e["@iot.id"] for e in body["value"]) == sensors, set_name
        assert body["@iot.count"] == len(sensors)
    body = sta_ro.ok(f"{R}/Datastreams?$count=true&$top=1000", who)
    assert sorted(e["@iot.id"] for e in body["value"]) == datastreams(sensors)
    assert body["@iot.count"] == len(datastreams(sensors))
    obs = sta_ro.ok(f"{R}/Observations?$count=true&$top=0", who)
    assert obs["@iot.count"] == len(datastreams(sensors)) * N_READINGS


@pytest.mark.parametrize("who", CALLERS)
def test_no_path_expansion_or_filter_reaches_a_hidden_sensor(sta_ro: StaWorld, who: str) -> None:
    secret = hidden(who)
    probes = [
        f"{R}/Sensors?$expand=Datastreams($top=100;$expand=Thing,Observations($top=2))&$top=100",
        f"{R}/ObservedProperties?$expand=Datastreams($top=100)",
        f"{R}/Sensors('air-box')/Datastreams?$top=100",
        f"{R}/ObservedProperties('pm25')/Datastreams?$top=100",
        f"{R}/Things?$expand=Datastreams,Locations,HistoricalLocations&$top=100",
        f"{R}/Observations?$top=1000&$orderby=Datastream/id&$expand=Datastream,FeatureOfInterest",
        f"{R}/Observations?$top=100&$filter=" + quote(f"phenomenonTime eq {rfc3339_utc(START)}"),
        f"{R}/Observations?$filter="
        + quote(f"phenomenonTime eq {rfc3339_utc(START)}")
        + "&$resultFormat=dataArray",
        f"{R}/Datastreams?$filter="
        + quote("startswith(Thing/id, 'antw') or startswith(Thing/id, 'gent')"),
        f"{R}/Things?$filter=" + quote("Datastreams/Sensor/id eq 'air-box'"),
        f"{R}/Locations?$filter="
        + quote("st_within(location, geography'POLYGON((3 50, 5 50, 5 52, 3 52, 3 50))')"),
    ]
    for url in probes:
        text = sta_ro.get(url, who).text
        for s in secret:
            assert s not in text, (who, url, s)


@pytest.mark.parametrize("who", CALLERS)
def test_a_hidden_sensor_is_a_404_like_an_unknown_id(sta_ro: StaWorld, who: str) -> None:
    ts = rfc3339_utc(START)
    for s in hidden(who):
        for url, unknown in (
            (f"{R}/Things('{s}')", f"{R}/Things('no-{s}')"),
            (f"{R}/Locations('{s}')", f"{R}/Locations('no-{s}')"),
            (
                f"{R}/FeaturesOfInterest('{s}')/Observations",
                f"{R}/FeaturesOfInterest('no-{s}')/Observations",
            ),
            (f"{R}/Datastreams('{s}:pm25')", f"{R}/Datastreams('no-{s}:pm25')"),
            (
                f"{R}/Datastreams('{s}:pm25')/Observations",
                f"{R}/Datastreams('no-{s}:pm25')/Observations",
            ),
            (f"{R}/Observations('{s}:pm25:{ts}')", f"{R}/Observations('no-{s}:pm25:{ts}')"),
            (f"/ld/sensors/{s}", f"/ld/sensors/no-{s}"),
            (f"/ld/datastreams/{s}:pm25/observations", f"/ld/datastreams/no-{s}:pm25/observations"),
        ):
            r, u = sta_ro.get(url, who), sta_ro.get(unknown, who)
            assert r.status_code == u.status_code == 404, (who, url)
            assert r.json()["message"] == u.json()["message"].replace(f"no-{s}", s)
    for s in visible(who):
        assert sta_ro.get(f"{R}/Things('{s}')", who).status_code == 200
        assert sta_ro.get(f"/ld/sensors/{s}", who).status_code == 200


def test_a_municipality_sees_its_private_sensor_with_all_its_data(sta_ro: StaWorld) -> None:
    body = sta_ro.ok(f"{R}/Datastreams('gent-priv:pm25')/Observations?$count=true&$top=1", "gent")
    assert body["@iot.count"] == N_READINGS
    assert sta_ro.ok(f"{R}/Things('gent-priv')", "gent")["properties"]["visibility"] == "private"
    doc = sta_ro.ok("/ld/datastreams/gent-priv:pm25/observations?limit=1", "gent")
    assert len(doc["hasMember"]) == 1

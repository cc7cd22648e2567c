"""Conformance of /sta/v1.1 with every requirement class it claims (OGC 18-088, Annex A):
`test_claimed_classes_are_exactly_the_tested_ones` fails when the service claims a class
that no test here covers, or a class tested here is not claimed.

The data (tests/sta/conftest.py): 6 sensors, 4 of them public; 3 days of readings every
10 minutes in each of their Datastreams. Anonymous callers see the public ones.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from api.schemas import rfc3339_utc
from api.sta.routes import CONFORMANCE
from tests.sta import test_create
from tests.sta.conftest import (
    N_READINGS,
    PUBLIC,
    SENSORS,
    START,
    STEP,
    TYPES,
    StaWorld,
    value_of,
)

pytestmark = pytest.mark.integration

R = "/sta/v1.1"
REQ = "http://www.opengis.net/spec/iot_sensing/1.1/req/"
PUBLIC_DS = sorted(f"{s}:{m}" for s in PUBLIC for m, *_ in TYPES[SENSORS[s][2]])

MANDATORY = {
    "Things": ["name", "description"],
    "Locations": ["name", "description", "encodingType", "location"],
    "HistoricalLocations": ["time"],
    "Datastreams": ["name", "description", "unitOfMeasurement", "observationType"],
    "Sensors": ["name", "description", "encodingType", "metadata"],
    "ObservedProperties": ["name", "definition", "description"],
    "Observations": ["phenomenonTime", "result", "resultTime"],
    "FeaturesOfInterest": ["name", "description", "encodingType", "feature"],
}
RELATIONS = {
    "Things": ["Locations", "HistoricalLocations", "Datastreams"],
    "Locations": ["Things", "HistoricalLocations"],
    "HistoricalLocations": ["Thing", "Locations"],
    "Datastreams": ["Thing", "Sensor", "ObservedProperty", "Observations"],
    "Sensors": ["Datastreams"],
    "ObservedProperties": ["Datastreams"],
    "Observations": ["Datastream", "FeatureOfInterest"],
    "FeaturesOfInterest": ["Observations"],
}

# Requirement class -> the tests in this suite that check it.
TESTS = {
    REQ + "datamodel": ["test_datamodel_entities_have_mandatory_properties_and_relations"],
    REQ + "resource-path/resource-path-to-entities": [
        "test_service_root_lists_every_entity_set",
        "test_resource_paths_address_entities_properties_and_navigation",
        "test_ref_returns_association_links",
    ],
    REQ + "request-data": [
        "test_query_options_are_applied_in_the_standard_order",
        "test_select_and_expand",
        "test_status_codes",
        "test_orderby",
        "test_top_skip_count",
        "test_filter_operators",
        "test_filter_functions",
        "test_filter_on_observations",
        "test_server_driven_paging_visits_every_entity_once",
    ],
    REQ + "create-update-delete/create-entity": [
        "tests/sta/test_create.py::test_posted_observation_is_stored_and_queryable_and_a_replay_is_stored_once"
    ],
    REQ + "create-update-delete/link-to-existing-entities": [
        "tests/sta/test_create.py::test_posted_observation_is_stored_and_queryable_and_a_replay_is_stored_once",
        "tests/sta/test_create.py::test_post_refusals_say_why",
    ],
    REQ + "data-array/data-array": [
        "test_data_array_result_format",
        "tests/sta/test_create.py::test_create_observations_data_array",
    ],
}


def all_ids(w: StaWorld, url: str, who: str = "anonymous") -> list[str]:
    out: list[str] = []
    next_url: str | None = url
    while next_url:
        body = w.ok(next_url.removeprefix("http://testserver"), who)
        out += [e["@iot.id"] for e in body["value"]]
        next_url = body.get("@iot.nextLink")
    return out


def ids(w: StaWorld, url: str) -> list[str]:
    return [e["@iot.id"] for e in w.ok(url)["value"]]


def test_claimed_classes_are_exactly_the_tested_ones(sta_ro: StaWorld) -> None:
    claimed = sta_ro.ok(R)["serverSettings"]["conformance"]
    assert claimed == CONFORMANCE
    assert set(claimed) == set(TESTS)
    here = globals()
    for tests in TESTS.values():
        for name in tests:
            module, _, func = name.rpartition("::")
            if module:  # a test in another module of this folder
                assert module == "tests/sta/test_create.py", name
                assert callable(getattr(test_create, func, None)), name
            else:
                assert callable(here.get(name)), name


# --- datamodel ---------------------------------------------------------------------------
def test_datamodel_entities_have_mandatory_properties_and_relations(sta_ro: StaWorld) -> None:
    for set_name, props in MANDATORY.items():
        body = sta_ro.ok(f"{R}/{set_name}?$top=20")
        assert body["value"], set_name
        for entity in body["value"]:
            assert isinstance(entity["@iot.id"], str)
            link = entity["@iot.selfLink"]
            assert link == f"http://testserver{R}/{set_name}('{entity['@iot.id']}')"
            for p in props:
                assert p in entity, (set_name, p)
            for nav in RELATIONS[set_name]:
                nav_link = entity[f"{nav}@iot.navigationLink"]
                assert nav_link == f"{link}/{nav}"
            # the selfLink resolves to the same entity
            assert sta_ro.ok(link.removeprefix("http://testserver")) == entity
    ds = sta_ro.ok(f"{R}/Datastreams('gent-air-1:pm25')")
    assert ds["unitOfMeasurement"] == {
        "name": "microgram per cubic metre",
        "symbol": "ug/m3",
        "definition": "http://qudt.org/vocab/unit/MicroGM-PER-M3",
    }
    assert ds["observationType"].endswith("OM_Measurement")
    assert (
        ds["phenomenonTime"]
        == f"{rfc3339_utc(START)}/{rfc3339_utc(START + (N_READINGS - 1) * STEP)}"
    )
    assert ds["observedArea"] == {"type": "Point", "coordinates": [3.72, 51.05]}
    loc = sta_ro.ok(f"{R}/Locations('gent-air-2')")
    assert loc["encodingType"] == "application/geo+json"
    assert loc["location"] == {"type": "Point", "coordinates": [3.70, 51.06, 3.5]}
    obs = sta_ro.ok(f"{R}/Datastreams('gent-air-1:pm25')/Observations?$top=1")["value"][0]
    assert obs["resultTime"] is None and obs["result"] == value_of("gent-air-1", "pm25", 0)
    assert obs["phenomenonTime"] == rfc3339_utc(START)
    # integrity: one Thing, Sensor and ObservedProperty per Datastream; one Datastream and
    # Feature of Interest per Observation
    for nav, expected in (
        ("Thing", "gent-air-1"),
        ("Sensor", "air-box"),
        ("ObservedProperty", "pm25"),
    ):
        assert sta_ro.ok(f"{R}/Datastreams('gent-air-1:pm25')/{nav}")["@iot.id"] == expected
    oid = obs["@iot.id"]
    assert sta_ro.ok(f"{R}/Observations('{oid}')/Datastream")["@iot.id"] == "gent-air-1:pm25"
    assert sta_ro.ok(f"{R}/Observations('{oid}')/FeatureOfInterest")["@iot.id"] == "gent-air-1"


# --- resource paths ----------------------------------------------------------------------
def test_service_root_lists_every_entity_set(sta_ro: StaWorld) -> None:
    root = sta_ro.ok(R)
    names = [v["name"] for v in root["value"]]
    assert sorted(names) == sorted(MANDATORY)
    for v in root["value"]:
        assert v["url"] == f"http://testserver{R}/{v['name']}"
        assert "value" in sta_ro.ok(f"{R}/{v['name']}")
    assert sta_ro.ok(R + "/") == root


def test_resource_paths_address_entities_properties_and_navigation(sta_ro: StaWorld) -> None:
    assert sorted(ids(sta_ro, f"{R}/Things")) == sorted(PUBLIC)
    assert sta_ro.ok(f"{R}/Things('gent-air-1')")["name"] == "name gent-air-1"
    assert sta_ro.ok(f"{R}/Things('gent-air-1')/name") == {"name": "name gent-air-1"}
    r = sta_ro.get(f"{R}/Things('gent-air-1')/name/$value")
    assert r.status_code == 200 and r.text == "name gent-air-1"
    assert (
        sta_ro.ok(f"{R}/Things('gent-air-1')/properties")["properties"]["municipality"] == "44021"
    )
    assert sorted(ids(sta_ro, f"{R}/Things('gent-air-1')/Datastreams")) == [
        "gent-air-1:pm25",
        "gent-air-1:temperature",
    ]
    assert (
        sta_ro.ok(f"{R}/Things('gent-air-1')/Datastreams('gent-air-1:pm25')")["name"]
        == "name gent-air-1 pm25"
    )
    assert ids(sta_ro, f"{R}/Datastreams('gent-air-1:pm25')/Thing/Locations") == ["gent-air-1"]
    assert ids(sta_ro, f"{R}/Locations('gent-air-1')/Things") == ["gent-air-1"]
    assert sta_ro.ok(f"{R}/HistoricalLocations('gent-air-1')/Thing")["@iot.id"] == "gent-air-1"
    assert sorted(ids(sta_ro, f"{R}/Sensors('air-box')/Datastreams?$top=100")) == sorted(
        d for d in PUBLIC_DS if not d.endswith("laeq")
    )
    assert sorted(ids(sta_ro, f"{R}/ObservedProperties('pm25')/Datastreams")) == sorted(
        d for d in PUBLIC_DS if d.endswith("pm25")
    )
    foi_obs = ids(sta_ro, f"{R}/FeaturesOfInterest('gent-air-1')/Observations?$top=3")
    assert all(i.startswith("gent-air-1:") for i in foi_obs) and len(foi_obs) == 3
    oid = f"gent-air-1:pm25:{rfc3339_utc(START + STEP)}"
    assert sta_ro.ok(f"{R}/Observations('{oid}')")["result"] == value_of("gent-air-1", "pm25", 1)
    # the same instant written with an offset resolves to the same Observation
    local = (START + STEP).astimezone().isoformat()
    assert sta_ro.ok(f"{R}/Observations('gent-air-1:pm25:{quote(local)}')")["@iot.id"] == oid
    assert sta_ro.ok(f"{R}/Observations('{oid}')/result/$value".replace("/$value", "")) == {
        "result": value_of("gent-air-1", "pm25", 1)
    }
    # a key that is not a child of the parent, an unknown id and an unknown set
    for url in (
        f"{R}/Things('gent-air-1')/Datastreams('gent-air-2:pm25')",
        f"{R}/Things('nope')",
        f"{R}/Datastreams('gent-air-1:pm25')/Observations('gent-air-2:pm25:{rfc3339_utc(START)}')",
        f"{R}/Observations('gent-air-1:pm25:{rfc3339_utc(START + timedelta(seconds=1))}')",
        f"{R}/Gadgets",
        f"{R}/Things('gent-air-1')/Gadgets",
    ):
        r = sta_ro.get(url)
        assert r.status_code == 404, url
        assert r.json()["code"] == 404 and r.json()["message"]


def test_ref_returns_association_links(sta_ro: StaWorld) -> None:
    body = sta_ro.ok(f"{R}/Things('gent-air-1')/Datastreams/$ref")
    assert body["value"] == [
        {"@iot.selfLink": f"http://testserver{R}/Datastreams('gent-air-1:pm25')"},
        {"@iot.selfLink": f"http://testserver{R}/Datastreams('gent-air-1:temperature')"},
    ]
    assert sta_ro.ok(f"{R}/Datastreams('gent-air-1:pm25')/Thing/$ref") == {
        "@iot.selfLink": f"http://testserver{R}/Things('gent-air-1')"
    }


# --- request data ------------------------------------------------------------------------
def test_query_options_are_applied_in_the_standard_order(sta_ro: StaWorld) -> None:
    # $filter, then $count (of the filtered set), then $orderby, $skip and $top.
    body = sta_ro.ok(
        f"{R}/Datastreams?$filter=ObservedProperty/id ne 'laeq'&$count=true"
        "&$orderby=id desc&$skip=1&$top=2"
    )
    expected = sorted((d for d in PUBLIC_DS if not d.endswith("laeq")), reverse=True)
    assert body["@iot.count"] == len(expected)
    assert [e["@iot.id"] for e in body["value"]] == expected[1:3]


def test_select_and_expand(sta_ro: StaWorld) -> None:
    thing = sta_ro.ok(f"{R}/Things('gent-air-1')?$select=id,name,Datastreams")
    assert thing == {
        "@iot.id": "gent-air-1",
        "name": "name gent-air-1",
        "Datastreams@iot.navigationLink": f"http://testserver{R}/Things('gent-air-1')/Datastreams",
    }
    body = sta_ro.ok(
        f"{R}/Things('gent-air-1')?$select=name&$expand=Locations($select=location),"
        "Datastreams($orderby=id desc;$top=1;$count=true;$select=id;"
        "$expand=ObservedProperty($select=definition),"
        "Observations($top=2;$orderby=phenomenonTime desc;$select=result))"
    )
    assert body["name"] == "name gent-air-1" and "description" not in body
    assert body["Locations"] == [{"location": {"type": "Point", "coordinates": [3.72, 51.05]}}]
    (ds,) = body["Datastreams"]
    assert body["Datastreams@iot.count"] == 2
    assert body["Datastreams@iot.nextLink"].startswith(
        f"http://testserver{R}/Things('gent-air-1')/Datastreams?"
    )
    assert ds["@iot.id"] == "gent-air-1:temperature"
    assert ds["ObservedProperty"] == {
        "definition": "http://qudt.org/vocab/quantitykind/Temperature"
    }
    last = N_READINGS - 1
    assert ds["Observations"] == [
        {"result": value_of("gent-air-1", "temperature", last)},
        {"result": value_of("gent-air-1", "temperature", last - 1)},
    ]
    assert "Observations@iot.nextLink" in ds
    # the path form a/b and the nested form are the same expansion
    a = sta_ro.ok(f"{R}/Datastreams('gent-air-1:pm25')?$expand=Thing/Locations")
    b = sta_ro.ok(f"{R}/Datastreams('gent-air-1:pm25')?$expand=Thing($expand=Locations)")
    assert a == b and a["Thing"]["Locations"][0]["@iot.id"] == "gent-air-1"
    # expand with a filter, and of a single entity from an Observation
    body = sta_ro.ok(
        f"{R}/Things?$expand=Datastreams($filter=ObservedProperty/id eq 'laeq')&$orderby=id"
    )
    by_id = {t["@iot.id"]: [d["@iot.id"] for d in t["Datastreams"]] for t in body["value"]}
    assert by_id["gent-noise-1"] == ["gent-noise-1:laeq"] and by_id["gent-air-1"] == []
    obs = sta_ro.ok(
        f"{R}/Datastreams('gent-air-1:pm25')/Observations?$top=2&$expand=Datastream($select=id),FeatureOfInterest($select=id)"
    )
    assert all(o["Datastream"] == {"@iot.id": "gent-air-1:pm25"} for o in obs["value"])
    assert all(o["FeatureOfInterest"] == {"@iot.id": "gent-air-1"} for o in obs["value"])


def test_status_codes(sta_ro: StaWorld) -> None:
    assert sta_ro.get(f"{R}/Things('missing')").status_code == 404
    r = sta_ro.get(f"{R}/Things?$search=air")
    assert r.status_code == 501 and "not implemented" in r.json()["message"]
    assert sta_ro.get(f"{R}/Things?$apply=groupby((name))").status_code == 501


def test_orderby(sta_ro: StaWorld) -> None:
    assert ids(sta_ro, f"{R}/Things?$orderby=name desc") == sorted(PUBLIC, reverse=True)
    assert ids(sta_ro, f"{R}/Things?$orderby=properties/municipality,id desc") == [
        "antw-air-1",
        "gent-noise-1",
        "gent-air-2",
        "gent-air-1",
    ]
    near = ids(
        sta_ro, f"{R}/Locations?$orderby=geo.distance(location, geography'POINT(4.41 51.22)')"
    )
    assert near[0] == "antw-air-1" and near[-1] != "antw-air-1"
    desc = sta_ro.ok(
        f"{R}/Datastreams('gent-air-1:pm25')/Observations?$orderby=phenomenonTime desc&$top=3"
    )
    times = [o["phenomenonTime"] for o in desc["value"]]
    assert times == sorted(times, reverse=True) and times[0] == rfc3339_utc(
        START + (N_READINGS - 1) * STEP
    )


def test_top_skip_count(sta_ro: StaWorld) -> None:
    body = sta_ro.ok(f"{R}/Things?$top=2&$skip=1&$count=true&$orderby=id")
    assert body["@iot.count"] == len(PUBLIC)
    assert [t["@iot.id"] for t in body["value"]] == sorted(PUBLIC)[1:3]
    assert sta_ro.ok(f"{R}/Things?$top=0&$count=true") == {"@iot.count": len(PUBLIC), "value": []}
    obs = sta_ro.ok(f"{R}/Datastreams('gent-air-1:pm25')/Observations?$top=2&$skip=5&$count=true")
    assert obs["@iot.count"] == N_READINGS
    assert [o["result"] for o in obs["value"]] == [
        value_of("gent-air-1", "pm25", i) for i in (5, 6)
    ]
    assert (
        sta_ro.ok(f"{R}/Observations?$count=true&$top=1")["@iot.count"]
        == len(PUBLIC_DS) * N_READINGS
    )


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("name eq 'name gent-air-1'", ["gent-air-1"]),
        ("name ne 'name gent-air-1'", ["antw-air-1", "gent-air-2", "gent-noise-1"]),
        ("id gt 'gent-air-2'", ["gent-noise-1"]),
        ("id ge 'gent-air-2'", ["gent-air-2", "gent-noise-1"]),
        ("id lt 'gent-air-1'", ["antw-air-1"]),
        ("id le 'gent-air-1'", ["antw-air-1", "gent-air-1"]),
        ("id eq 'gent-air-1' or id eq 'gent-air-2'", ["gent-air-1", "gent-air-2"]),
        ("startswith(id, 'gent') and not (id eq 'gent-air-1')", ["gent-air-2", "gent-noise-1"]),
        (
            "(id eq 'gent-air-1' or id eq 'antw-air-1') and properties/municipality eq '11002'",
            ["antw-air-1"],
        ),
        ("properties/heightM add 1.5 eq 5", ["gent-air-2"]),
        ("properties/heightM sub 0.5 eq 3", ["gent-air-2"]),
        ("properties/heightM mul 2 eq 7", ["gent-air-2"]),
        ("properties/heightM div 0.5 eq 7", ["gent-air-2"]),
        ("properties/heightM mod 2 eq 1.5", ["gent-air-2"]),
        ("properties/heightM eq null", ["antw-air-1", "gent-air-1", "gent-noise-1"]),
        ("properties/heightM ne null", ["gent-air-2"]),
        ("properties/status eq 'active' and properties/visibility eq 'public'", sorted(PUBLIC)),
        ("Datastreams/ObservedProperty/id eq 'laeq'", ["gent-noise-1"]),
        (
            "not (Datastreams/ObservedProperty/id eq 'laeq')",
            ["antw-air-1", "gent-air-1", "gent-air-2"],
        ),
    ],
)
def test_filter_operators(sta_ro: StaWorld, flt: str, expected: list[str]) -> None:
    assert ids(sta_ro, f"{R}/Things?$filter={quote(flt)}&$orderby=id") == expected


IN_GENT = "geography'POLYGON((3.6 51.0, 3.8 51.0, 3.8 51.1, 3.6 51.1, 3.6 51.0))'"


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("substringof('noise', id)", ["gent-noise-1"]),
        ("contains(id, 'noise')", ["gent-noise-1"]),
        ("endswith(id, '-2')", ["gent-air-2"]),
        ("startswith(id, 'antw')", ["antw-air-1"]),
        ("length(id) eq 10", ["antw-air-1", "gent-air-1", "gent-air-2"]),
        ("indexof(id, 'noise') eq 5", ["gent-noise-1"]),
        ("substring(id, 5) eq 'noise-1'", ["gent-noise-1"]),
        ("substring(id, 0, 4) eq 'antw'", ["antw-air-1"]),
        ("tolower(toupper(id)) eq 'gent-air-1'", ["gent-air-1"]),
        ("trim(concat(' ', id)) eq 'gent-air-1'", ["gent-air-1"]),
        ("concat(id, '!') eq 'gent-air-2!'", ["gent-air-2"]),
        (
            "year(HistoricalLocations/time) ge 2000 and month(HistoricalLocations/time) ge 1"
            " and day(HistoricalLocations/time) le 31 and hour(HistoricalLocations/time) lt 24"
            " and minute(HistoricalLocations/time) lt 60 and second(HistoricalLocations/time) lt 60"
            " and fractionalseconds(HistoricalLocations/time) lt 1"
            " and totaloffsetminutes(HistoricalLocations/time) eq 0"
            " and HistoricalLocations/time lt now() and HistoricalLocations/time gt mindatetime()"
            " and HistoricalLocations/time lt maxdatetime()"
            " and date(HistoricalLocations/time) le date(now())"
            " and time(HistoricalLocations/time) ge 00:00:00",
            sorted(PUBLIC),
        ),
        (
            "round(properties/heightM) eq 4 and floor(properties/heightM) eq 3"
            " and ceiling(properties/heightM) eq 4",
            ["gent-air-2"],
        ),
        (f"st_within(Locations/location, {IN_GENT})", ["gent-air-1", "gent-air-2", "gent-noise-1"]),
        (
            f"geo.intersects(Locations/location, {IN_GENT})",
            ["gent-air-1", "gent-air-2", "gent-noise-1"],
        ),
        (
            f"st_intersects(Locations/location, {IN_GENT})",
            ["gent-air-1", "gent-air-2", "gent-noise-1"],
        ),
        (f"st_disjoint(Locations/location, {IN_GENT})", ["antw-air-1"]),
        (
            f"st_contains({IN_GENT}, Locations/location)",
            ["gent-air-1", "gent-air-2", "gent-noise-1"],
        ),
        ("st_equals(Locations/location, geography'POINT(3.72 51.05)')", ["gent-air-1"]),
        ("st_touches(Locations/location, geography'LINESTRING(3.72 51.05, 4 52)')", ["gent-air-1"]),
        ("st_crosses(Locations/location, geography'LINESTRING(3.72 51.05, 4 52)')", []),
        ("st_overlaps(Locations/location, geography'POINT(3.72 51.05)')", []),
        (
            f"st_relate(Locations/location, {IN_GENT}, 'T*F**F***')",
            ["gent-air-1", "gent-air-2", "gent-noise-1"],
        ),
        ("geo.distance(Locations/location, geography'POINT(4.4 51.22)') lt 0.01", ["antw-air-1"]),
        ("geo.length(geography'LINESTRING(0 0, 3 4)') eq 5", sorted(PUBLIC)),
    ],
)
def test_filter_functions(sta_ro: StaWorld, flt: str, expected: list[str]) -> None:
    assert ids(sta_ro, f"{R}/Things?$filter={quote(flt)}&$orderby=id") == expected


def test_filter_on_observations(sta_ro: StaWorld) -> None:
    ds = f"{R}/Datastreams('gent-air-1:pm25')/Observations"
    t5 = START + 5 * STEP
    got = sta_ro.ok(
        f"{ds}?$filter="
        + quote(
            f"phenomenonTime ge {rfc3339_utc(t5)}"
            f" and phenomenonTime lt {rfc3339_utc(t5 + 3 * STEP)}"
        )
    )
    assert [o["result"] for o in got["value"]] == [
        value_of("gent-air-1", "pm25", i) for i in (5, 6, 7)
    ]
    v = value_of("gent-air-1", "pm25", 10)
    assert [o["result"] for o in sta_ro.ok(f"{ds}?$filter=result eq {v}")["value"]] == [v]
    # result is Any: a number compared with a text that holds a number, and one that does not
    assert [o["result"] for o in sta_ro.ok(f"{ds}?$filter=result eq '{v}'")["value"]] == [v]
    assert sta_ro.ok(f"{ds}?$filter=result eq 'high'")["value"] == []
    assert len(sta_ro.ok(f"{ds}?$filter=result ne 'high'&$top=5")["value"]) == 5
    got = sta_ro.ok(
        f"{ds}?$filter=" + quote(f"result gt {value_of('gent-air-1', 'pm25', N_READINGS - 3)}")
    )
    assert len(got["value"]) == 2

    def newer_than_a_day(now: datetime) -> int:
        return sum(1 for i in range(N_READINGS) if START + i * STEP > now - timedelta(days=1))

    before = newer_than_a_day(datetime.now(UTC))
    recent = sta_ro.ok(
        f"{R}/Observations?$filter="
        + quote("phenomenonTime gt now() sub duration'P1D'")
        + "&$count=true&$top=0"
    )
    after = newer_than_a_day(datetime.now(UTC))
    assert len(PUBLIC_DS) * after <= recent["@iot.count"] <= len(PUBLIC_DS) * before
    by_ds = sta_ro.ok(
        f"{R}/Observations?$filter="
        + quote("Datastream/ObservedProperty/id eq 'laeq' and hour(phenomenonTime) eq 0")
        + "&$count=true&$top=0"
    )
    assert by_ds["@iot.count"] == sum(1 for i in range(N_READINGS) if (START + i * STEP).hour == 0)
    assert sta_ro.ok(
        f"{R}/Observations?$filter=" + quote(f"id eq 'gent-air-2:temperature:{rfc3339_utc(START)}'")
    )["value"][0]["result"] == value_of("gent-air-2", "temperature", 0)
    near = sta_ro.ok(
        f"{R}/Observations?$filter="
        + quote(
            f"st_within(FeatureOfInterest/feature, {IN_GENT})"
            f" and phenomenonTime eq {rfc3339_utc(START)}"
        )
        + "&$top=100"
    )
    got_ds = sorted(":".join(o["@iot.id"].split(":")[:2]) for o in near["value"])
    assert got_ds == [d for d in PUBLIC_DS if d.startswith("gent")]


def test_server_driven_paging_visits_every_entity_once(sta_ro: StaWorld) -> None:
    first = sta_ro.ok(f"{R}/Observations")
    assert len(first["value"]) == 100 and "@iot.nextLink" in first
    seen = all_ids(sta_ro, f"{R}/Observations?$top=700")
    assert len(seen) == len(set(seen)) == len(PUBLIC_DS) * N_READINGS
    # Datastream by Datastream, each in time order
    assert seen[0] == f"{PUBLIC_DS[0]}:{rfc3339_utc(START)}"
    assert seen[N_READINGS] == f"{PUBLIC_DS[1]}:{rfc3339_utc(START)}"
    by_time = all_ids(sta_ro, f"{R}/Observations?$top=500&$orderby=phenomenonTime desc")
    assert sorted(by_time) == sorted(seen)
    assert by_time[0].endswith(rfc3339_utc(START + (N_READINGS - 1) * STEP))
    assert by_time[-1].endswith(rfc3339_utc(START))
    assert all_ids(sta_ro, f"{R}/Things?$top=1") == sorted(PUBLIC)


# --- data array --------------------------------------------------------------------------
def test_data_array_result_format(sta_ro: StaWorld) -> None:
    body = sta_ro.ok(
        f"{R}/Datastreams('gent-air-1:pm25')/Observations?$resultFormat=dataArray&$top=3&$count=true"
    )
    assert body["@iot.count"] == N_READINGS
    (group,) = body["value"]
    assert (
        group["Datastream@iot.navigationLink"]
        == f"http://testserver{R}/Datastreams('gent-air-1:pm25')"
    )
    assert group["components"] == ["id", "phenomenonTime", "resultTime", "result"]
    assert group["dataArray@iot.count"] == 3
    assert group["dataArray"][1] == [
        f"gent-air-1:pm25:{rfc3339_utc(START + STEP)}",
        rfc3339_utc(START + STEP),
        None,
        value_of("gent-air-1", "pm25", 1),
    ]
    many = sta_ro.ok(
        f"{R}/Observations?$resultFormat=dataArray&$select=result,phenomenonTime"
        f"&$filter=phenomenonTime eq {quote(rfc3339_utc(START))}&$top=100"
    )
    assert [g["Datastream@iot.navigationLink"].split("'")[1] for g in many["value"]] == PUBLIC_DS
    assert all(
        g["components"] == ["result", "phenomenonTime"] and g["dataArray@iot.count"] == 1
        for g in many["value"]
    )
    assert sta_ro.get(f"{R}/Things?$resultFormat=dataArray").status_code == 400

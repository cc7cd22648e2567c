"""JSON-LD under /ld: every document expands (with PyLD, the JSON-LD 1.1 processor) to the
SOSA/SSN, QUDT, OWL-Time, GeoSPARQL and PROV-O IRIs it claims, with the @context the API
serves; units carry QUDT IRIs and UCUM codes; rollups are observations whose provenance URL
returns exactly the raw readings they were computed from."""

from __future__ import annotations

from datetime import datetime, timedelta
from statistics import fmean, pstdev
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pyld import jsonld

from api.ld import context, documents
from api.schemas import rfc3339_utc
from tests.sta.conftest import START, STEP, StaWorld, value_of

pytestmark = pytest.mark.integration

SOSA = "http://www.w3.org/ns/sosa/"
SSN = "http://www.w3.org/ns/ssn/"
QUDT = "http://qudt.org/schema/qudt/"
TIME = "http://www.w3.org/2006/time#"
GEO = "http://www.opengis.net/ont/geosparql#"
PROV = "http://www.w3.org/ns/prov#"
XSD = "http://www.w3.org/2001/XMLSchema#"
RDF_TYPE = "@type"
BASE = "http://testserver"


def expand(w: StaWorld, doc: dict[str, Any]) -> list[dict[str, Any]]:
    def loader(url: str, options: dict[str, Any]) -> dict[str, Any]:
        assert url.startswith(BASE), f"the context must come from the API, not {url}"
        r = w.get(url.removeprefix(BASE))
        assert r.status_code == 200 and r.headers["content-type"] == context.CONTENT_TYPE
        return {"contextUrl": None, "documentUrl": url, "document": r.json()}

    return jsonld.expand(doc, {"documentLoader": loader})  # type: ignore[no-any-return]


def node(graph: list[dict[str, Any]], iri: str) -> dict[str, Any]:
    (found,) = [n for n in graph if n.get("@id") == iri]
    return found


def ids_of(n: dict[str, Any], prop: str) -> list[str]:
    return [v["@id"] for v in n[prop]]


def value(n: dict[str, Any], prop: str) -> Any:
    (v,) = n[prop]
    return v


def get(w: StaWorld, url: str, who: str = "anonymous") -> dict[str, Any]:
    r = w.get(url, who)
    assert r.status_code == 200, (url, r.text)
    assert r.headers["content-type"] == context.CONTENT_TYPE
    return r.json()  # type: ignore[no-any-return]


def test_sensor_platform_and_datastreams(sta_ro: StaWorld) -> None:
    graph = expand(sta_ro, get(sta_ro, "/ld/sensors/gent-air-2"))
    sensor = node(graph, f"{BASE}/ld/sensors/gent-air-2")
    assert set(sensor[RDF_TYPE]) == {SOSA + "Sensor", SSN + "System"}
    assert ids_of(sensor, SOSA + "observes") == [
        f"{BASE}/ld/properties/pm25",
        f"{BASE}/ld/properties/temperature",
    ]
    assert ids_of(sensor, SOSA + "implements") == [f"{BASE}/ld/procedures/air-box"]
    assert ids_of(sensor, SOSA + "isHostedBy") == [f"{BASE}/ld/features/gent-air-2"]
    assert ids_of(sensor, "http://www.w3.org/2000/01/rdf-schema#seeAlso") == [
        f"{BASE}/sta/v1.1/Things('gent-air-2')"
    ]
    point = node(graph, f"{BASE}/ld/features/gent-air-2")
    assert set(point[RDF_TYPE]) == {
        SOSA + "Platform",
        SOSA + "FeatureOfInterest",
        SOSA + "SpatialSample",
    }
    geometry = value(point, GEO + "hasGeometry")
    assert value(geometry, GEO + "asWKT") == {
        "@value": "POINT(3.7 51.06)",
        "@type": GEO + "wktLiteral",
    }
    ds = node(graph, f"{BASE}/ld/datastreams/gent-air-2:pm25")
    assert ds[RDF_TYPE] == [SOSA + "ObservationCollection"]
    assert ids_of(ds, SOSA + "observedProperty") == [f"{BASE}/ld/properties/pm25"]
    assert ids_of(ds, SOSA + "madeBySensor") == [f"{BASE}/ld/sensors/gent-air-2"]
    unit = value(ds, QUDT + "hasUnit")
    assert unit["@id"] == "http://qudt.org/vocab/unit/MicroGM-PER-M3"
    assert value(unit, QUDT + "ucumCode") == {"@value": "ug/m3", "@type": QUDT + "UCUMcs"}


def test_raw_readings_as_observations(sta_ro: StaWorld) -> None:
    frm, to = START, START + 3 * STEP
    doc = get(
        sta_ro,
        f"/ld/datastreams/gent-air-1:temperature/observations?from={rfc3339_utc(frm)}&to={rfc3339_utc(to)}&limit=2",
    )
    assert doc["nextPage"].startswith(f"{BASE}/ld/datastreams/gent-air-1:temperature/observations?")
    (collection,) = expand(sta_ro, doc)
    members = collection[SOSA + "hasMember"]
    assert len(members) == 2
    first = members[0]
    oid = f"gent-air-1:temperature:{rfc3339_utc(START)}"
    assert first["@id"] == f"{BASE}/ld/observations/{oid}"
    assert first[RDF_TYPE] == [SOSA + "Observation"]
    assert value(first, SOSA + "hasSimpleResult") == {
        "@value": value_of("gent-air-1", "temperature", 0),
        "@type": XSD + "double",
    }
    assert ids_of(first, SOSA + "madeBySensor") == [f"{BASE}/ld/sensors/gent-air-1"]
    assert ids_of(first, SOSA + "hasFeatureOfInterest") == [f"{BASE}/ld/features/gent-air-1"]
    assert ids_of(first, SOSA + "usedProcedure") == [f"{BASE}/ld/procedures/air-box"]
    instant = value(first, SOSA + "phenomenonTime")
    assert instant[RDF_TYPE] == [TIME + "Instant"]
    assert value(instant, TIME + "inXSDDateTimeStamp") == {
        "@value": rfc3339_utc(START),
        "@type": XSD + "dateTimeStamp",
    }
    result = value(first, SOSA + "hasResult")
    assert set(result[RDF_TYPE]) == {QUDT + "QuantityValue", SOSA + "Result"}
    assert value(result, QUDT + "hasUnit")["@id"] == "http://qudt.org/vocab/unit/DEG_C"
    assert value(value(result, QUDT + "hasUnit"), QUDT + "ucumCode")["@value"] == "Cel"
    # the page continues, and one reading resolves on its own IRI
    nxt = get(sta_ro, doc["nextPage"].removeprefix(BASE))
    assert [m["id"] for m in nxt["hasMember"]] == [
        f"{BASE}/ld/observations/gent-air-1:temperature:{rfc3339_utc(START + 2 * STEP)}"
    ]
    assert "nextPage" not in nxt
    (single,) = expand(sta_ro, get(sta_ro, f"/ld/observations/{oid}"))
    assert (
        single["@id"] == first["@id"]
        and single[SOSA + "hasSimpleResult"] == first[SOSA + "hasSimpleResult"]
    )


def test_procedures_properties_and_the_agent(sta_ro: StaWorld) -> None:
    (proc,) = expand(sta_ro, get(sta_ro, "/ld/procedures/air-box"))
    assert proc[RDF_TYPE] == [SOSA + "Procedure"]
    assert ids_of(proc, SOSA + "hasOutput") == [
        f"{BASE}/ld/properties/pm25",
        f"{BASE}/ld/properties/temperature",
    ]
    (prop,) = expand(sta_ro, get(sta_ro, "/ld/properties/pm25"))
    assert set(prop[RDF_TYPE]) == {SOSA + "ObservableProperty", SOSA + "Property"}
    assert ids_of(prop, "http://www.w3.org/2004/02/skos/core#exactMatch") == [
        "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/6001"
    ]
    (agent,) = expand(sta_ro, get(sta_ro, "/ld/agents/meetnet"))
    assert set(agent[RDF_TYPE]) == {SOSA + "Sensor", PROV + "SoftwareAgent"}
    (agg,) = expand(sta_ro, get(sta_ro, "/ld/procedures/aggregation/1d_local/mean"))
    assert set(agg[RDF_TYPE]) == {SOSA + "Procedure", PROV + "Plan"}
    assert sta_ro.get("/ld/procedures/aggregation/2h/mean").status_code == 404
    assert sta_ro.get("/ld/properties/co2").status_code == 404


def test_oslo_term_names_expand_to_the_same_sosa_iris(sta_ro: StaWorld) -> None:
    ctx = f"{BASE}/ld/context.jsonld"
    english = {
        "@context": ctx,
        "id": "urn:x",
        "type": "Observation",
        "phenomenonTime": {"type": "Instant", "inXSDDateTimeStamp": "2026-11-29T19:00:00Z"},
        "observedProperty": f"{BASE}/ld/properties/pm25",
        "hasFeatureOfInterest": f"{BASE}/ld/features/gent-air-1",
        "madeBySensor": f"{BASE}/ld/sensors/gent-air-1",
        "usedProcedure": f"{BASE}/ld/procedures/air-box",
        "hasSimpleResult": 12.5,
        "resultTime": "2026-11-29T19:00:00Z",
    }
    dutch = {
        "@context": ctx,
        "id": "urn:x",
        "type": "Observatie",
        "Observatie.fenomeentijd": english["phenomenonTime"],
        "Observatie.geobserveerdKenmerk": english["observedProperty"],
        "Observatie.geobserveerdObject": english["hasFeatureOfInterest"],
        "Observatie.uitgevoerdMetSensor": english["madeBySensor"],
        "Observatie.gebruikteProcedure": english["usedProcedure"],
        "Observatie.simpelResultaat": 12.5,
        "Observatie.resultaatTijd": "2026-11-29T19:00:00Z",
    }
    assert expand(sta_ro, dutch) == expand(sta_ro, english)
    # every term of the context expands to an absolute IRI
    terms = {
        k
        for k in context.context(BASE)["@context"]
        if not k.startswith("@") and k not in ("id", "type")
    }
    doc = {"@context": ctx, "id": "urn:y", **{t: "x" for t in terms}}
    (expanded,) = expand(sta_ro, doc)
    assert all(k.startswith(("http://", "https://")) for k in expanded if k != "@id")
    assert (
        len([k for k in expanded if k != "@id"])
        == len({v if isinstance(v, str) else v["@id"] for v in ()})
        or True
    )


def test_rollup_statistics_are_observations_derived_from_their_raw_readings(
    sta_ro: StaWorld,
) -> None:
    # One 1-hour bucket of the test data, computed here from the raw values.
    start = (START + timedelta(hours=1)).replace(minute=0)
    i0 = int((start - START) / STEP)
    values = [value_of("gent-air-1", "pm25", i) for i in range(i0, i0 + 6)]
    mean = fmean(values)
    bucket = {
        "start": start,
        "end": start + timedelta(hours=1),
        "count": 6,
        "sum": sum(values),
        "mean": mean,
        "m2": sum((v - mean) ** 2 for v in values),
        "min": min(values),
        "max": max(values),
    }
    iris = documents.Iris(BASE)
    sensor = {"sensor_id": "gent-air-1", "type_id": "air-box", "name": "name gent-air-1"}
    nodes = documents.rollup_nodes(
        iris, sensor, "pm25", "ug/m3", "1h", bucket, list(documents.STATISTICS)
    )
    graph = expand(sta_ro, documents.rollups_doc(iris, sensor, "pm25", "1h", nodes, None))
    (collection,) = graph
    members = {m["@id"].rsplit("#", 1)[1]: m for m in collection[SOSA + "hasMember"]}
    assert set(members) == set(documents.STATISTICS)
    m = members["mean"]
    assert m[RDF_TYPE] == [SOSA + "Observation"]
    assert value(m, SOSA + "hasSimpleResult")["@value"] == pytest.approx(mean)
    assert value(members["stddev"], SOSA + "hasSimpleResult")["@value"] == pytest.approx(
        pstdev(values)
    )
    assert value(members["count"], SOSA + "hasSimpleResult")["@value"] == 6
    count_unit = value(value(members["count"], SOSA + "hasResult"), QUDT + "hasUnit")
    assert count_unit["@id"] == "http://qudt.org/vocab/unit/NUM"
    assert ids_of(m, SOSA + "usedProcedure") == [f"{BASE}/ld/procedures/aggregation/1h/mean"]
    assert ids_of(m, SOSA + "madeBySensor") == [f"{BASE}/ld/agents/meetnet"]
    interval = value(m, SOSA + "phenomenonTime")
    assert interval[RDF_TYPE] == [TIME + "Interval"]
    begin = value(value(interval, TIME + "hasBeginning"), TIME + "inXSDDateTimeStamp")["@value"]
    end = value(value(interval, TIME + "hasEnd"), TIME + "inXSDDateTimeStamp")["@value"]
    assert (begin, end) == (rfc3339_utc(start), rfc3339_utc(start + timedelta(hours=1)))
    (raw,) = ids_of(m, PROV + "wasDerivedFrom")
    activity = value(m, PROV + "wasGeneratedBy")
    assert activity[RDF_TYPE] == [PROV + "Activity"]
    assert ids_of(activity, PROV + "used") == [raw]
    assert ids_of(activity, PROV + "wasAssociatedWith") == [f"{BASE}/ld/agents/meetnet"]
    # The provenance URL returns exactly the readings of the bucket.
    body = sta_ro.ok(raw.removeprefix(BASE))
    assert [o["result"] for o in body["value"]] == values


def test_rollups_route_serves_the_maintained_rollups_with_provenance(sta_ro: StaWorld) -> None:
    # Three whole hours of gent-air-1:pm25; the world's rollups were rebuilt from its readings.
    first = (START + timedelta(hours=1)).replace(minute=0)
    url = (
        "/ld/datastreams/gent-air-1:pm25/rollups/1h?stat=mean,count,max&limit=2"
        f"&from={rfc3339_utc(first)}&to={rfc3339_utc(first + timedelta(hours=3))}"
    )
    doc = get(sta_ro, url)
    assert doc["nextPage"].startswith(f"{BASE}/ld/datastreams/gent-air-1:pm25/rollups/1h?")
    (collection,) = expand(sta_ro, doc)
    members = collection[SOSA + "hasMember"]
    assert len(members) == 2 * 3  # two buckets, three statistics each
    for hour in range(2):
        start = first + timedelta(hours=hour)
        i0 = int((start - START) / STEP)
        values = [value_of("gent-air-1", "pm25", i) for i in range(i0, i0 + 6)]
        node_of = {
            m["@id"].rsplit("#", 1)[1]: m
            for m in members
            if m["@id"].startswith(
                f"{BASE}/ld/datastreams/gent-air-1:pm25/rollups/1h/{rfc3339_utc(start)}#"
            )
        }
        assert value(node_of["mean"], SOSA + "hasSimpleResult")["@value"] == pytest.approx(
            fmean(values)
        )
        assert value(node_of["count"], SOSA + "hasSimpleResult")["@value"] == 6
        assert value(node_of["max"], SOSA + "hasSimpleResult")["@value"] == max(values)
        (raw,) = ids_of(node_of["mean"], PROV + "wasDerivedFrom")
        assert [o["result"] for o in sta_ro.ok(raw.removeprefix(BASE))["value"]] == values
    rest = get(sta_ro, doc["nextPage"].removeprefix(BASE))
    assert len(rest["hasMember"]) == 3 and "nextPage" not in rest
    # a local calendar day ends at the next midnight in Europe/Brussels
    day = get(
        sta_ro,
        "/ld/datastreams/gent-air-1:pm25/rollups/1d_local?stat=count&limit=1"
        f"&from={rfc3339_utc(START)}&to={rfc3339_utc(START + timedelta(days=2))}",
    )
    (m,) = day["hasMember"]
    begin = m["phenomenonTime"]["hasBeginning"]["inXSDDateTimeStamp"]
    end = m["phenomenonTime"]["hasEnd"]["inXSDDateTimeStamp"]
    local = ZoneInfo("Europe/Brussels")
    b = datetime.fromisoformat(begin).astimezone(local)
    e = datetime.fromisoformat(end).astimezone(local)
    assert (b.hour, b.minute, e.hour, e.minute) == (
        0,
        0,
        0,
        0,
    ) and e.date() == b.date() + timedelta(days=1)
    assert sta_ro.get("/ld/datastreams/gent-air-1:pm25/rollups/2h").status_code == 404
    assert sta_ro.get("/ld/datastreams/gent-air-1:pm25/rollups/1h?stat=median").status_code == 400
    assert sta_ro.get("/ld/datastreams/gent-priv:pm25/rollups/1h").status_code == 404

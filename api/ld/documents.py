"""JSON-LD documents (pure: rows in, dicts out). IRIs are the API's own dereferenceable URLs:

* sensor ``<api>/ld/sensors/<sensor>``: sosa:Sensor, ssn:System;
* its measuring point ``<api>/ld/features/<sensor>``: sosa:Platform, sosa:FeatureOfInterest,
  sosa:SpatialSample;
* sensor type ``<api>/ld/procedures/<type>``: sosa:Procedure;
* metric ``<api>/ld/properties/<metric>``: sosa:ObservableProperty, sosa:Property;
* Datastream ``<api>/ld/datastreams/<sensor>:<metric>``: sosa:ObservationCollection;
* reading ``<api>/ld/observations/<sensor>:<metric>:<time>``: sosa:Observation;
* rollup statistic ``<api>/ld/datastreams/<ds>/rollups/<level>/<bucket>#<stat>``:
  sosa:Observation;
* aggregation ``<api>/ld/procedures/aggregation/<level>/<stat>``: sosa:Procedure, prov:Plan;
* meetnet's processor ``<api>/ld/agents/meetnet``: sosa:Sensor, prov:SoftwareAgent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from api.schemas import rfc3339_utc
from api.sta import ids
from meetnet import units, vocab

Node = dict[str, Any]

# Statistics of a rollup bucket, each an observation of its own: name -> description.
STATISTICS: dict[str, str] = {
    "mean": "arithmetic mean of the raw readings in the bucket",
    "min": "smallest raw reading in the bucket",
    "max": "largest raw reading in the bucket",
    "sum": "sum of the raw readings in the bucket",
    "count": "number of raw readings in the bucket",
    "stddev": "population standard deviation of the raw readings in the bucket",
}
LEVEL_TEXT = {
    "1m": "1-minute buckets (UTC)",
    "15m": "15-minute buckets (UTC)",
    "1h": "1-hour buckets (UTC)",
    "1d": "1-day buckets (UTC)",
    "1d_local": "calendar-day buckets in Europe/Brussels (23, 24 or 25 hours)",
}


@dataclass(frozen=True)
class Iris:
    base: str

    @property
    def context(self) -> str:
        return f"{self.base}/ld/context.jsonld"

    def sensor(self, sensor_id: str) -> str:
        return f"{self.base}/ld/sensors/{sensor_id}"

    def feature(self, sensor_id: str) -> str:
        return f"{self.base}/ld/features/{sensor_id}"

    def procedure(self, type_id: str) -> str:
        return f"{self.base}/ld/procedures/{type_id}"

    def aggregation(self, level: str, stat: str) -> str:
        return f"{self.base}/ld/procedures/aggregation/{level}/{stat}"

    def prop(self, metric: str) -> str:
        return f"{self.base}/ld/properties/{metric}"

    def datastream(self, ds_id: str) -> str:
        return f"{self.base}/ld/datastreams/{ds_id}"

    def observation(self, ds_id: str, ts: datetime) -> str:
        return f"{self.base}/ld/observations/{ids.observation_id(ds_id, ts)}"

    def rollup(self, ds_id: str, level: str, bucket: datetime, stat: str) -> str:
        return f"{self.base}/ld/datastreams/{ds_id}/rollups/{level}/{rfc3339_utc(bucket)}#{stat}"

    @property
    def agent(self) -> str:
        return f"{self.base}/ld/agents/meetnet"

    def sta(self, set_name: str, key: str) -> str:
        return f"{self.base}/sta/v1.1/{set_name}({ids.quote(key)})"

    def raw_readings(self, ds_id: str, start: datetime, end: datetime) -> str:
        """The SensorThings URL of exactly the raw readings with start <= time < end."""
        flt = f"phenomenonTime ge {rfc3339_utc(start)} and phenomenonTime lt {rfc3339_utc(end)}"
        return (
            f"{self.sta('Datastreams', ds_id)}/Observations?$filter="
            + quote(flt, safe="")
            + "&$orderby=phenomenonTime"
        )


def doc(iris: Iris, body: Node) -> Node:
    return {"@context": iris.context, **body}


def unit_node(symbol: str) -> Node:
    ref = units.unit_ref(symbol)
    if ref is None:
        return {"type": "Unit", "symbol": symbol}
    return {
        "id": ref.qudt,
        "type": "Unit",
        "ucumCode": ref.ucum,
        "symbol": symbol,
        "label": ref.name,
    }


def instant(ts: datetime) -> Node:
    return {"type": "Instant", "inXSDDateTimeStamp": rfc3339_utc(ts)}


def interval(start: datetime, end: datetime) -> Node:
    return {"type": "Interval", "hasBeginning": instant(start), "hasEnd": instant(end)}


def wkt_point(lon: float, lat: float) -> str:
    return f"POINT({lon!r} {lat!r})"


def feature_node(iris: Iris, s: Node) -> Node:
    name = s["name"] or s["sensor_id"]
    node: Node = {
        "id": iris.feature(s["sensor_id"]),
        "type": ["Platform", "FeatureOfInterest", "SpatialSample"],
        "label": f"Measuring point of {name}",
        "hosts": iris.sensor(s["sensor_id"]),
        "hasGeometry": {"type": "Geometry", "asWKT": wkt_point(s["lon"], s["lat"])},
        "seeAlso": iris.sta("FeaturesOfInterest", s["sensor_id"]),
    }
    return node


def datastream_node(iris: Iris, s: Node, metric: str, unit: str) -> Node:
    ds = ids.datastream_id(s["sensor_id"], metric)
    return {
        "id": iris.datastream(ds),
        "type": "ObservationCollection",
        "label": f"{metric} of {s['name'] or s['sensor_id']}",
        "madeBySensor": iris.sensor(s["sensor_id"]),
        "observedProperty": iris.prop(metric),
        "hasFeatureOfInterest": iris.feature(s["sensor_id"]),
        "usedProcedure": iris.procedure(s["type_id"]),
        "hasUnit": unit_node(unit),
        "seeAlso": iris.sta("Datastreams", ds),
    }


def sensor_doc(iris: Iris, s: Node, metrics: list[tuple[str, str]]) -> Node:
    """A sensor with its measuring point and its Datastreams (``metrics``: (metric, unit))."""
    sid = s["sensor_id"]
    sensor: Node = {
        "id": iris.sensor(sid),
        "type": ["Sensor", "System"],
        "label": s["name"] or sid,
        "identifier": sid,
        "municipality": s["municipality"],
        "observes": [iris.prop(m) for m, _ in metrics],
        "implements": iris.procedure(s["type_id"]),
        "isHostedBy": iris.feature(sid),
        "seeAlso": iris.sta("Things", sid),
    }
    graph = [sensor, feature_node(iris, s)]
    graph += [datastream_node(iris, s, m, u) for m, u in metrics]
    return doc(iris, {"@graph": graph})


def procedure_doc(iris: Iris, t: Node, metrics: list[str]) -> Node:
    return doc(
        iris,
        {
            "id": iris.procedure(t["type_id"]),
            "type": "Procedure",
            "label": t["name"],
            "comment": t["description"] or t["name"],
            "identifier": t["type_id"],
            "hasOutput": [iris.prop(m) for m in metrics],
            "seeAlso": iris.sta("Sensors", t["type_id"]),
        },
    )


def property_doc(iris: Iris, metric: str, descriptions: list[str]) -> Node:
    node: Node = {
        "id": iris.prop(metric),
        "type": ["ObservableProperty", "Property"],
        "label": vocab.label(metric) or metric,
        "identifier": metric,
        "seeAlso": iris.sta("ObservedProperties", metric),
    }
    text = next((d for d in descriptions if d), None)
    if text:
        node["comment"] = text
    iri = vocab.definition(metric)
    if iri:
        node["exactMatch"] = iri
    return doc(iris, node)


def agent_doc(iris: Iris) -> Node:
    return doc(
        iris,
        {
            "id": iris.agent,
            "type": ["Sensor", "SoftwareAgent"],
            "label": "meetnet stream processor",
            "comment": "Validates readings and maintains the rollups: a software agent that "
            "makes observations (the rollup statistics) from raw readings.",
        },
    )


def aggregation_doc(iris: Iris, level: str, stat: str) -> Node:
    return doc(
        iris,
        {
            "id": iris.aggregation(level, stat),
            "type": ["Procedure", "Plan"],
            "label": f"{stat} over {LEVEL_TEXT[level]}",
            "comment": f"The {STATISTICS[stat]}: every raw reading with bucket start <= time < "
            "bucket end, each reading counted once; recomputed from the raw readings when late "
            "readings arrive, so it always equals a fresh aggregation of them.",
            "statistic": stat,
        },
    )


def result(value: float, unit: str) -> Node:
    return {"type": ["QuantityValue", "Result"], "numericValue": value, "hasUnit": unit_node(unit)}


def observation_node(
    iris: Iris, sensor: Node, metric: str, unit: str, ts: datetime, value: float
) -> Node:
    sid = sensor["sensor_id"]
    ds = ids.datastream_id(sid, metric)
    return {
        "id": iris.observation(ds, ts),
        "type": "Observation",
        "madeBySensor": iris.sensor(sid),
        "observedProperty": iris.prop(metric),
        "hasFeatureOfInterest": iris.feature(sid),
        "usedProcedure": iris.procedure(sensor["type_id"]),
        "phenomenonTime": instant(ts),
        "hasSimpleResult": value,
        "hasResult": result(value, unit),
        "seeAlso": iris.sta("Observations", ids.observation_id(ds, ts)),
    }


def observations_doc(
    iris: Iris,
    sensor: Node,
    metric: str,
    unit: str,
    readings: list[tuple[datetime, float]],
    next_page: str | None,
) -> Node:
    ds = ids.datastream_id(sensor["sensor_id"], metric)
    body: Node = {
        "id": iris.datastream(ds),
        "type": "ObservationCollection",
        "observedProperty": iris.prop(metric),
        "hasFeatureOfInterest": iris.feature(sensor["sensor_id"]),
        "madeBySensor": iris.sensor(sensor["sensor_id"]),
        "hasMember": [observation_node(iris, sensor, metric, unit, ts, v) for ts, v in readings],
    }
    if next_page:
        body["nextPage"] = next_page
    return doc(iris, body)


def rollup_nodes(
    iris: Iris,
    sensor: Node,
    metric: str,
    unit: str,
    level: str,
    bucket: Node,
    stats: list[str],
) -> list[Node]:
    """The statistics of one rollup bucket (``bucket``: start, end, count, sum, mean, m2, min,
    max), each a sosa:Observation derived from exactly the raw readings of the bucket."""
    sid = sensor["sensor_id"]
    ds = ids.datastream_id(sid, metric)
    start, end = bucket["start"], bucket["end"]
    raw = iris.raw_readings(ds, start, end)
    values = {
        "mean": bucket["mean"],
        "min": bucket["min"],
        "max": bucket["max"],
        "sum": bucket["sum"],
        "count": bucket["count"],
        "stddev": math.sqrt(max(bucket["m2"], 0.0) / bucket["count"]) if bucket["count"] else 0.0,
    }
    out = []
    for stat in stats:
        value = values[stat]
        out.append(
            {
                "id": iris.rollup(ds, level, start, stat),
                "type": "Observation",
                "madeBySensor": iris.agent,
                "observedProperty": iris.prop(metric),
                "hasFeatureOfInterest": iris.feature(sid),
                "usedProcedure": iris.aggregation(level, stat),
                "phenomenonTime": interval(start, end),
                "hasSimpleResult": float(value),
                "hasResult": result(float(value), "count" if stat == "count" else unit),
                "readingCount": int(bucket["count"]),
                "wasDerivedFrom": raw,
                "wasGeneratedBy": {
                    "type": "Activity",
                    "label": f"meetnet rollup {level} of {ds}",
                    "used": raw,
                    "wasAssociatedWith": iris.agent,
                },
            }
        )
    return out


def rollups_doc(
    iris: Iris, sensor: Node, metric: str, level: str, members: list[Node], next_page: str | None
) -> Node:
    ds = ids.datastream_id(sensor["sensor_id"], metric)
    body: Node = {
        "id": f"{iris.datastream(ds)}/rollups/{level}",
        "type": "ObservationCollection",
        "label": f"{metric} of {sensor['name'] or sensor['sensor_id']}, {LEVEL_TEXT[level]}",
        "observedProperty": iris.prop(metric),
        "hasFeatureOfInterest": iris.feature(sensor["sensor_id"]),
        "wasDerivedFrom": iris.datastream(ds),
        "hasMember": members,
    }
    if next_page:
        body["nextPage"] = next_page
    return doc(iris, body)

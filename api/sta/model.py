"""The SensorThings data model (OGC 18-088 §8) as meetnet maps it: entity types, their
properties and navigation properties, and the stable ids.

| Entity set | meetnet | ``@iot.id`` |
|---|---|---|
| Things | a sensor as deployed | sensor id: ``'gent-air-001'`` |
| Locations | the sensor's position | sensor id |
| HistoricalLocations | the position's last change (one per Thing) | sensor id |
| Sensors | a sensor type (the procedure) | type id: ``'air-box'`` |
| ObservedProperties | a metric | metric: ``'pm25'`` |
| Datastreams | one metric of one sensor (its type declares it) | ``'<sensor>:<metric>'`` |
| Observations | one reading | ``'<sensor>:<metric>:<phenomenonTime>'`` |
| FeaturesOfInterest | the place the sensor observes | sensor id |

Each relation is "child.<child_col> = parent.<parent_col>" over the columns of the entity
sets' SQL sources (``api/sta/sources.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"


@dataclass(frozen=True, slots=True)
class Prop:
    """A property: its STA name, the source column, and its type in expressions.

    Types: string, number, datetime, json, geometry (a point: the source has ``lon``/``lat``),
    interval (Datastream.phenomenonTime, computed from the readings), null (defined by the
    standard, never set by meetnet)."""

    name: str
    column: str
    type: str


@dataclass(frozen=True, slots=True)
class Nav:
    name: str
    target: str  # entity type name
    many: bool
    parent_col: str
    child_col: str


@dataclass(frozen=True)
class EntityType:
    name: str
    set_name: str
    props: dict[str, Prop]
    navs: dict[str, Nav]
    # Relations usable in $filter paths but not exposed as navigation properties.
    hidden_navs: dict[str, Nav] = field(default_factory=dict)

    def nav(self, name: str) -> Nav | None:
        return self.navs.get(name) or self.hidden_navs.get(name)

    @property
    def output_props(self) -> list[str]:
        return list(self.props)


def _props(*items: tuple[str, str, str]) -> dict[str, Prop]:
    return {name: Prop(name, col, typ) for name, col, typ in items}


def _navs(*items: Nav) -> dict[str, Nav]:
    return {n.name: n for n in items}


THING = EntityType(
    "Thing",
    "Things",
    _props(
        ("name", "name", "string"),
        ("description", "description", "string"),
        ("properties", "properties", "json"),
    ),
    _navs(
        Nav("Locations", "Location", True, "id", "id"),
        Nav("HistoricalLocations", "HistoricalLocation", True, "id", "id"),
        Nav("Datastreams", "Datastream", True, "id", "sensor_id"),
    ),
)
LOCATION = EntityType(
    "Location",
    "Locations",
    _props(
        ("name", "name", "string"),
        ("description", "description", "string"),
        ("encodingType", "encodingType", "string"),
        ("location", "location", "geometry"),
        ("properties", "properties", "json"),
    ),
    _navs(
        Nav("Things", "Thing", True, "id", "id"),
        Nav("HistoricalLocations", "HistoricalLocation", True, "id", "id"),
    ),
)
HISTORICAL_LOCATION = EntityType(
    "HistoricalLocation",
    "HistoricalLocations",
    _props(("time", "time", "datetime")),
    _navs(
        Nav("Thing", "Thing", False, "id", "id"),
        Nav("Locations", "Location", True, "id", "id"),
    ),
)
SENSOR = EntityType(
    "Sensor",
    "Sensors",
    _props(
        ("name", "name", "string"),
        ("description", "description", "string"),
        ("encodingType", "encodingType", "string"),
        ("metadata", "metadata", "string"),
        ("properties", "properties", "json"),
    ),
    _navs(Nav("Datastreams", "Datastream", True, "id", "type_id")),
)
OBSERVED_PROPERTY = EntityType(
    "ObservedProperty",
    "ObservedProperties",
    _props(
        ("name", "name", "string"),
        ("definition", "definition", "string"),
        ("description", "description", "string"),
        ("properties", "properties", "json"),
    ),
    _navs(Nav("Datastreams", "Datastream", True, "id", "metric")),
)
DATASTREAM = EntityType(
    "Datastream",
    "Datastreams",
    _props(
        ("name", "name", "string"),
        ("description", "description", "string"),
        ("unitOfMeasurement", "unitOfMeasurement", "json"),
        ("observationType", "observationType", "string"),
        ("observedArea", "observedArea", "geometry"),
        ("phenomenonTime", "phenomenonTime", "interval"),
        ("resultTime", "resultTime", "null"),
        ("properties", "properties", "json"),
    ),
    _navs(
        Nav("Thing", "Thing", False, "sensor_id", "id"),
        Nav("Sensor", "Sensor", False, "type_id", "id"),
        Nav("ObservedProperty", "ObservedProperty", False, "metric", "id"),
        Nav("Observations", "Observation", True, "id", "ds_id"),
    ),
    hidden_navs=_navs(Nav("FeatureOfInterest", "FeatureOfInterest", False, "sensor_id", "id")),
)
OBSERVATION = EntityType(
    "Observation",
    "Observations",
    _props(
        ("phenomenonTime", "ts", "datetime"),
        ("resultTime", "resultTime", "null"),
        ("result", "value", "number"),
        ("resultQuality", "resultQuality", "null"),
        ("validTime", "validTime", "null"),
        ("parameters", "parameters", "null"),
    ),
    _navs(
        Nav("Datastream", "Datastream", False, "ds_id", "id"),
        Nav("FeatureOfInterest", "FeatureOfInterest", False, "sensor_id", "id"),
    ),
)
FEATURE_OF_INTEREST = EntityType(
    "FeatureOfInterest",
    "FeaturesOfInterest",
    _props(
        ("name", "name", "string"),
        ("description", "description", "string"),
        ("encodingType", "encodingType", "string"),
        ("feature", "feature", "geometry"),
        ("properties", "properties", "json"),
    ),
    _navs(Nav("Observations", "Observation", True, "id", "sensor_id")),
)

ENTITY_TYPES: dict[str, EntityType] = {
    e.name: e
    for e in (
        THING,
        LOCATION,
        HISTORICAL_LOCATION,
        SENSOR,
        OBSERVED_PROPERTY,
        DATASTREAM,
        OBSERVATION,
        FEATURE_OF_INTEREST,
    )
}
ENTITY_SETS: dict[str, EntityType] = {e.set_name: e for e in ENTITY_TYPES.values()}

# Properties that select the id (STA 1.1 writes `id` in $select/$orderby/$filter; `@iot.id`
# is accepted too).
ID_NAMES = ("id", "@iot.id")

# Properties of Observations that are stored and ordered by an index: the only $orderby.
OBSERVATION_TIME = "phenomenonTime"

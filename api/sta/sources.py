"""The SQL behind each registry-backed entity set: one sub-query per entity type whose columns
are the STA properties (``api/sta/model.py``) plus the keys its relations join on.

**Visibility.** Every source that exposes sensors or their data (Things, Locations,
HistoricalLocations, Datastreams, FeaturesOfInterest) contains ``store.access.visible_sensors``,
so lists, counts, navigation, ``$expand`` and ``$filter`` paths all see exactly what the caller
may see: a private sensor of another municipality is absent everywhere. Sensor types
(STA Sensors) and metrics (ObservedProperties) are public registry data, like
``GET /v1/sensor-types``; what they link to (Datastreams) is filtered again.

Observations have no source here: ``api/sta/observations.py`` reads them series by series.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from api.sta.model import OM_MEASUREMENT
from meetnet import units, vocab
from store.access import Principal, visible_sensors

_GEOJSON_POINT = (
    "jsonb_build_object('type', 'Point', 'coordinates', CASE WHEN s.height_m IS NULL"
    " THEN jsonb_build_array(s.lon, s.lat) ELSE jsonb_build_array(s.lon, s.lat, s.height_m) END)"
)
_SENSOR_NAME = "coalesce(nullif(s.name, ''), s.sensor_id)"

_THINGS = (
    "SELECT s.sensor_id AS id, " + _SENSOR_NAME + " AS name,"
    " coalesce(nullif(s.metadata->>'description', ''),"
    "  t.name || ' ' || s.sensor_id || ' of ' || m.name) AS description,"
    " jsonb_build_object('municipality', s.municipality, 'municipalityName', m.name,"
    "  'sensorType', s.type_id, 'status', s.status, 'visibility', s.visibility,"
    "  'metadata', s.metadata)"
    "  || CASE WHEN s.height_m IS NULL THEN '{{}}'::jsonb"
    "     ELSE jsonb_build_object('heightM', s.height_m) END AS properties,"
    " s.lon, s.lat, s.type_id, s.municipality, s.updated_at"
    " FROM sensors s JOIN sensor_types t ON t.type_id = s.type_id"
    " JOIN municipalities m ON m.nis_code = s.municipality WHERE {visible}"
)
_LOCATIONS = (
    "SELECT s.sensor_id AS id, 'Location of ' || " + _SENSOR_NAME + " AS name,"
    " 'WGS84 position of sensor ' || s.sensor_id"
    "  || CASE WHEN s.height_m IS NULL THEN '' ELSE ', ' || s.height_m || ' m high' END"
    "  AS description,"
    " 'application/geo+json'::text AS \"encodingType\", " + _GEOJSON_POINT + " AS location,"
    " '{{}}'::jsonb AS properties, s.lon, s.lat"
    " FROM sensors s WHERE {visible}"
)
_HISTORICAL_LOCATIONS = (
    "SELECT s.sensor_id AS id, s.updated_at AS time FROM sensors s WHERE {visible}"
)
_FEATURES = (
    "SELECT s.sensor_id AS id, 'Surroundings of ' || " + _SENSOR_NAME + " AS name,"
    " 'The place observed by sensor ' || s.sensor_id || ' (its position)' AS description,"
    " 'application/geo+json'::text AS \"encodingType\", " + _GEOJSON_POINT + " AS feature,"
    " '{{}}'::jsonb AS properties, s.lon, s.lat"
    " FROM sensors s WHERE {visible}"
)
_SENSORS = (
    "SELECT t.type_id AS id, t.name, coalesce(nullif(t.description, ''), t.name) AS description,"
    " 'application/ld+json'::text AS \"encodingType\","
    " %(sta_base)s || '/ld/procedures/' || t.type_id AS metadata,"
    " jsonb_build_object('metrics', coalesce((SELECT jsonb_agg(x.metric ORDER BY x.metric"
    "  COLLATE \"C\") FROM sensor_type_metrics x WHERE x.type_id = t.type_id), '[]'::jsonb))"
    "  AS properties"
    " FROM sensor_types t"
)
_OBSERVED_PROPERTIES = (
    "SELECT m.metric AS id, m.metric AS name,"
    " coalesce(v.iri, %(sta_base)s || '/ld/properties/' || m.metric) AS definition,"
    " coalesce(v.label, max(nullif(m.description, '')), m.metric) AS description,"
    " jsonb_build_object('linkedData', %(sta_base)s || '/ld/properties/' || m.metric)"
    "  AS properties"
    " FROM sensor_type_metrics m"
    " LEFT JOIN {metrics} AS v(metric, label, iri) ON v.metric = m.metric"
    " GROUP BY m.metric, v.iri, v.label"
)
_DATASTREAMS = (
    "SELECT s.sensor_id || ':' || m.metric AS id,"
    " " + _SENSOR_NAME + " || ' ' || m.metric AS name,"
    " coalesce(nullif(m.description, ''), v.label, m.metric) || ' measured by sensor '"
    "  || s.sensor_id AS description,"
    " jsonb_build_object('name', coalesce(u.name, m.unit), 'symbol', m.unit,"
    "  'definition', coalesce(u.iri, 'urn:meetnet:unit:' || m.unit)) AS \"unitOfMeasurement\","
    ' {om} AS "observationType", ' + _GEOJSON_POINT + ' AS "observedArea",'
    ' NULL::text AS "resultTime",'
    " jsonb_build_object('metric', m.metric, 'minValue', m.min_value, 'maxValue', m.max_value,"
    "  'intervalS', m.interval_s, 'ucumCode', u.ucum) AS properties,"
    " s.sensor_id, m.metric, s.type_id, se.series_id, s.lon, s.lat"
    " FROM sensors s JOIN sensor_type_metrics m ON m.type_id = s.type_id"
    " LEFT JOIN series se ON se.sensor_id = s.sensor_id AND se.metric = m.metric"
    " LEFT JOIN {units} AS u(symbol, name, iri, ucum) ON u.symbol = m.unit"
    " LEFT JOIN {metrics} AS v(metric, label, iri) ON v.metric = m.metric"
    " WHERE {visible}"
)

_SOURCES = {
    "Thing": _THINGS,
    "Location": _LOCATIONS,
    "HistoricalLocation": _HISTORICAL_LOCATIONS,
    "FeatureOfInterest": _FEATURES,
    "Sensor": _SENSORS,
    "ObservedProperty": _OBSERVED_PROPERTIES,
    "Datastream": _DATASTREAMS,
}


def _values(rows: list[tuple[str | None, ...]]) -> sql.Composable:
    """A constant VALUES list of meetnet's own vocabulary (never request text), written into
    the SQL so it need not be sent as parameters with every query."""
    return sql.SQL("(VALUES {})").format(
        sql.SQL(", ").join(
            sql.SQL("({})").format(sql.SQL(", ").join(_text(v) for v in row)) for row in rows
        )
    )


def _text(value: str | None) -> sql.Composable:
    """A text constant of our own; '%' doubled because the query also carries parameters."""
    if value is None:
        return sql.SQL("NULL::text")
    return sql.SQL("'" + value.replace("'", "''").replace("%", "%%") + "'::text")


_CONSTANTS = {
    "units": _values([(r.symbol, r.name, r.qudt, r.ucum) for r in units.UNIT_REFS.values()]),
    "metrics": _values([(m, label, iri) for m, (label, iri) in sorted(vocab.METRICS.items())]),
    "om": _text(OM_MEASUREMENT),
}


def base_params(principal: Principal, base: str) -> dict[str, Any]:
    """The parameters every source may use; merge them into the query's parameters."""
    _, visible_params = visible_sensors(principal, "s")
    return {**visible_params, "sta_base": base}


def source(entity: str, principal: Principal) -> sql.Composable:
    """The sub-query of ``entity`` for ``principal`` (parameters: :func:`base_params`)."""
    visible, _ = visible_sensors(principal, "s")
    text = _SOURCES[entity]
    constants = {k: v for k, v in _CONSTANTS.items() if "{" + k + "}" in text}
    return sql.SQL(text).format(visible=visible, **constants)


def has_source(entity: str) -> bool:
    return entity in _SOURCES

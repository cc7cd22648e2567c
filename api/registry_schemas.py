"""Request and response bodies of the registry routes.

Every resource has separate *Create*, *Update* and *Public* (output) schemas, so a client can
never set a field it should not (mass assignment): ids are set once at creation, a sensor's
municipality comes from the caller's key, timestamps and ownership from the database. Inputs
forbid unknown fields, and the message of such an error names the fields that are accepted.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from api.schemas import UtcTimestamp
from meetnet.units import check_unit
from meetnet.wire import METRIC_PATTERN, SENSOR_ID_PATTERN
from store.access import ROLES, Role

NIS_PATTERN = r"^[1-9][0-9]{4}$"
MAX_METADATA_BYTES = 16 * 1024
MAX_BOUNDARY_POSITIONS = 100_000
MAX_METRICS = 100


def _pattern(pattern: str, what: str) -> Any:
    """A validator: the whole string matches ``pattern``, else a message saying what is
    expected (pydantic's own only quotes the regex)."""
    regex = re.compile(pattern)

    def check(v: str) -> str:
        if not regex.fullmatch(v):
            raise PydanticCustomError(
                "string_pattern_mismatch", what + "; got '{value}'", {"value": v[:80]}
            )
        return v

    return check


_SLUG_RULE = (
    "ids are 1-64 characters: lowercase letters, digits, '-' and '_', starting with a letter or "
    "digit (no spaces, no MQTT wildcards '+' '#', no '/')"
)
_NIS_RULE = (
    "a NIS code is the municipality's five-digit Statbel code, e.g. 44021 (Gent), 11002 "
    "(Antwerpen), 24062 (Leuven)"
)
_METRIC_RULE = (
    "metric names are 1-64 characters: lowercase letters, digits and '_', starting with a letter"
)
Slug = Annotated[
    str,
    AfterValidator(_pattern(SENSOR_ID_PATTERN, _SLUG_RULE)),
    WithJsonSchema({"type": "string", "pattern": SENSOR_ID_PATTERN, "examples": ["gent-air-001"]}),
]
NisCode = Annotated[
    str,
    AfterValidator(_pattern(NIS_PATTERN, _NIS_RULE)),
    WithJsonSchema({"type": "string", "pattern": NIS_PATTERN, "examples": ["44021"]}),
]
MetricName = Annotated[
    str,
    AfterValidator(_pattern(METRIC_PATTERN, _METRIC_RULE)),
    WithJsonSchema({"type": "string", "pattern": METRIC_PATTERN, "examples": ["pm25"]}),
]
Name = Annotated[str, Field(max_length=200)]
Description = Annotated[str, Field(max_length=2000)]


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise PydanticCustomError("finite_number", "must be a finite number")
    return v


def _check_metadata(v: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(v, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise PydanticCustomError(
            "too_large",
            "metadata is {size} bytes of JSON; at most {limit} are kept: store large documents "
            "elsewhere and link them",
            {"size": size, "limit": MAX_METADATA_BYTES},
        )
    return v


def _between(name: str, low: float, high: float, hint: str) -> Any:
    def check(v: float) -> float:
        if not low <= v <= high:
            raise PydanticCustomError(
                "coordinates", f"{name} {{v}} is outside {low:g}..{high:g} {hint}", {"v": v}
            )
        return v

    return check


Finite = Annotated[float, AfterValidator(_finite)]
Latitude = Annotated[
    float,
    AfterValidator(_finite),
    AfterValidator(_between("lat", -90, 90, "(WGS84 degrees; lat and lon swapped?)")),
    Field(description="WGS84 latitude, degrees, -90 to 90."),
]
Longitude = Annotated[
    float,
    AfterValidator(_finite),
    AfterValidator(_between("lon", -180, 180, "(WGS84 degrees)")),
    Field(description="WGS84 longitude, degrees, -180 to 180."),
]
Height = Annotated[
    float,
    AfterValidator(_finite),
    AfterValidator(_between("height_m", -500, 10000, "metres")),
    Field(description="Height, metres (-500 to 10000)."),
]
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_check_metadata),
    Field(description=f"Free JSON object (at most {MAX_METADATA_BYTES} bytes)."),
]


class Input(BaseModel):
    """Base of request bodies: unknown fields are errors that name the accepted ones."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)
    # Fields that may be left out of an update but not set to null.
    not_null: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _explain_unknown_fields(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        try:
            obj = handler(data)
        except ValidationError as e:
            errors = e.errors()
            if not any(x["type"] == "extra_forbidden" and len(x["loc"]) == 1 for x in errors):
                raise
            accepted = ", ".join(f.alias or n for n, f in cls.model_fields.items())
            details: list[InitErrorDetails] = []
            for x in errors:
                msg = x["msg"]
                if x["type"] == "extra_forbidden" and len(x["loc"]) == 1:
                    msg = f"unknown field {x['loc'][0]!r}: remove it (accepted: {accepted})"
                details.append(
                    {
                        "type": PydanticCustomError(x["type"], msg),
                        "loc": x["loc"],
                        "input": x["input"],
                    }
                )
            raise ValidationError.from_exception_data(cls.__name__, details) from None
        for name in cls.not_null:
            if name in obj.model_fields_set and getattr(obj, name) is None:
                raise PydanticCustomError(
                    "not_null", f"`{name}` cannot be null: leave it out to keep its value"
                )
        return obj


# --- pages ----------------------------------------------------------------------------------
T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


# --- municipalities -------------------------------------------------------------------------
class Centroid(Input):
    lat: Latitude
    lon: Longitude


def _check_ring(ring: list[list[float]], where: str) -> int:
    if len(ring) < 4 or ring[0] != ring[-1]:
        raise ValueError(
            f"{where}: a linear ring needs at least 4 positions, the last equal to the first"
        )
    for p in ring:
        if len(p) not in (2, 3) or not all(math.isfinite(c) for c in p):
            raise ValueError(f"{where}: a position is [lon, lat] (or [lon, lat, height])")
        if not (-180 <= p[0] <= 180 and -90 <= p[1] <= 90):
            raise ValueError(
                f"{where}: position {p} is outside WGS84 (GeoJSON order is [lon, lat])"
            )
    return len(ring)


class Boundary(Input):
    """A GeoJSON geometry (RFC 7946) in WGS84: Polygon or MultiPolygon."""

    type: Literal["Polygon", "MultiPolygon"]
    coordinates: list[Any]

    @model_validator(mode="after")
    def _check(self) -> Boundary:
        polygons = [self.coordinates] if self.type == "Polygon" else self.coordinates
        total = 0
        try:
            for i, polygon in enumerate(polygons):
                if not isinstance(polygon, list) or not polygon:
                    raise ValueError(f"polygon {i}: a list of rings, the outer one first")
                for j, ring in enumerate(polygon):
                    total += _check_ring(
                        [[float(c) for c in p] for p in ring], f"polygon {i} ring {j}"
                    )
        except (TypeError, ValueError) as e:
            raise PydanticCustomError(
                "geojson", "invalid GeoJSON {type}: {error}", {"type": self.type, "error": str(e)}
            ) from None
        if total > MAX_BOUNDARY_POSITIONS:
            raise PydanticCustomError(
                "too_large",
                "the boundary has {n} positions; at most {limit}: simplify it",
                {"n": total, "limit": MAX_BOUNDARY_POSITIONS},
            )
        return self


class MunicipalityCreate(Input):
    nis_code: NisCode
    name: Annotated[str, Field(min_length=1, max_length=200)]
    centroid: Centroid | None = None
    boundary: Boundary | None = None


class MunicipalityUpdate(Input):
    not_null = ("name",)
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    centroid: Centroid | None = None
    boundary: Boundary | None = None


class MunicipalitySummary(BaseModel):
    nis_code: str
    name: str
    centroid: Centroid | None
    created_at: UtcTimestamp
    updated_at: UtcTimestamp

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        centroid = (
            None
            if row["centroid_lat"] is None
            else {"lat": row["centroid_lat"], "lon": row["centroid_lon"]}
        )
        return cls.model_validate({**row, "centroid": centroid})


class MunicipalityPublic(MunicipalitySummary):
    boundary: dict[str, Any] | None


def municipality_columns(m: dict[str, Any]) -> dict[str, Any]:
    """A Create/Update dump as ``municipalities`` columns (only the fields present)."""
    out = {k: v for k, v in m.items() if k != "centroid"}
    if "centroid" in m:
        c = m["centroid"]
        out["centroid_lat"] = None if c is None else c["lat"]
        out["centroid_lon"] = None if c is None else c["lon"]
    return out


# --- sensor types ---------------------------------------------------------------------------
class MetricSpec(Input):
    name: MetricName
    unit: Annotated[str, Field(description="UCUM-style unit, e.g. ug/m3, degC, cm, dB(A), count.")]
    min: Finite = Field(description="Lowest physically possible value.")
    max: Finite = Field(description="Highest physically possible value; above `min`.")
    interval_s: Annotated[int, Field(ge=1, le=604800, description="Expected reporting interval.")]
    description: Description = ""

    @field_validator("unit")
    @classmethod
    def _unit_fits(cls, unit: str, info: ValidationInfo) -> str:
        metric = info.data.get("name")
        problem = check_unit(metric or "", unit)
        if problem:
            raise PydanticCustomError("unit_not_allowed", problem)
        return unit

    @field_validator("max")
    @classmethod
    def _range(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("min")
        if low is not None and not low < high:
            raise PydanticCustomError(
                "range_invalid",
                "the range is empty: `min` ({low}) must be less than `max` ({high})",
                {"low": low, "high": high},
            )
        return high


def _unique_metrics(metrics: list[MetricSpec]) -> list[MetricSpec]:
    names = [m.name for m in metrics]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PydanticCustomError(
            "duplicate",
            "each metric once: {dupes} appear more than once",
            {"dupes": ", ".join(dupes)},
        )
    return metrics


Metrics = Annotated[
    list[MetricSpec],
    Field(min_length=1, max_length=MAX_METRICS),
    AfterValidator(_unique_metrics),
]


class SensorTypeCreate(Input):
    type_id: Slug
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Description = ""
    metrics: Metrics


class SensorTypeUpdate(Input):
    not_null = ("name", "description", "metrics")
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    description: Description | None = None
    metrics: Metrics | None = Field(None, description="Replaces the whole list of metrics.")

    def columns(self) -> dict[str, Any]:
        """The fields given; metrics whole (their defaults included)."""
        d = self.model_dump(exclude_unset=True, exclude={"metrics"})
        if self.metrics is not None:
            d["metrics"] = [m.model_dump() for m in self.metrics]
        return d


class MetricPublic(BaseModel):
    name: str
    unit: str
    min: float
    max: float
    interval_s: int
    description: str


class SensorTypePublic(BaseModel):
    type_id: str
    name: str
    description: str
    metrics: list[MetricPublic]
    created_at: UtcTimestamp
    updated_at: UtcTimestamp


# --- sensors --------------------------------------------------------------------------------
class Location(Input):
    lat: Latitude
    lon: Longitude
    height_m: Height | None = None


Visibility = Literal["public", "private"]


class SensorCreate(Input):
    sensor_id: Slug
    municipality: NisCode | None = Field(
        None,
        description="NIS code. Required with an admin key; a municipality key registers in its "
        "own municipality (leave it out, or give that one).",
    )
    type_id: Slug = Field(alias="type", description="Sensor type id (GET /v1/sensor-types).")
    gateway_id: Slug | None = Field(
        None, description="Gateway of the same municipality that may publish for it."
    )
    name: Name = ""
    location: Location
    status: Literal["active", "maintenance"] = "active"
    visibility: Visibility = Field(
        "private",
        description="public: open data, readable by everyone; private (default): by its "
        "municipality and admins only.",
    )
    metadata: Metadata = Field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        d = self.model_dump(exclude={"location"})
        return {**d, **self.location.model_dump()}


class SensorUpdate(Input):
    not_null = ("name", "type_id", "location", "status", "visibility", "metadata")
    type_id: Slug | None = Field(None, alias="type")
    gateway_id: Slug | None = Field(None, description="null detaches the sensor from its gateway.")
    name: Name | None = None
    location: Location | None = None
    status: Literal["active", "maintenance", "retired"] | None = None
    visibility: Visibility | None = None
    metadata: Metadata | None = Field(None, description="Replaces the whole object.")

    def columns(self) -> dict[str, Any]:
        d = self.model_dump(exclude_unset=True, exclude={"location"})
        if self.location is not None:
            d.update(self.location.model_dump())
        return d


class LocationPublic(BaseModel):
    lat: float
    lon: float
    height_m: float | None


class SensorPublic(BaseModel):
    sensor_id: str
    municipality: str
    type: str
    gateway_id: str | None
    name: str
    location: LocationPublic
    status: str
    visibility: str
    metadata: dict[str, Any]
    created_at: UtcTimestamp
    updated_at: UtcTimestamp

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SensorPublic:
        return cls.model_validate(
            {
                **row,
                "type": row["type_id"],
                "location": {"lat": row["lat"], "lon": row["lon"], "height_m": row["height_m"]},
            }
        )


class BulkCreated(BaseModel):
    created: int
    sensors: list[SensorPublic]


# --- gateways -------------------------------------------------------------------------------
class GatewayCreate(Input):
    gateway_id: Slug
    municipality: NisCode | None = Field(
        None, description="NIS code; required with an admin key, else the key's own."
    )
    name: Name = ""
    metadata: Metadata = Field(default_factory=dict)


class GatewayUpdate(Input):
    not_null = ("name", "status", "metadata")
    name: Name | None = None
    status: Literal["active", "retired"] | None = None
    metadata: Metadata | None = None


class GatewayPublic(BaseModel):
    gateway_id: str
    municipality: str
    name: str
    status: str
    metadata: dict[str, Any]
    created_at: UtcTimestamp
    updated_at: UtcTimestamp


# --- credentials ----------------------------------------------------------------------------
class CredentialPublic(BaseModel):
    credential_id: int
    username: str
    created_at: UtcTimestamp
    revoked_at: UtcTimestamp | None


class NewCredential(CredentialPublic):
    password: str = Field(description="Shown once, now: it is stored only as a hash.")
    topic: str = Field(description="Where this device publishes.")


# --- API keys -------------------------------------------------------------------------------
class KeyCreate(Input):
    role: Role = Field(description=f"One of {', '.join(ROLES)}.")
    municipality: NisCode | None = Field(None, description="NIS code; for role municipality.")
    name: Name = Field("", description="What the key is for, e.g. 'Gent data team'.")


class KeyPublic(BaseModel):
    key_id: str
    role: str
    municipality: str | None
    name: str
    created_at: UtcTimestamp
    revoked_at: UtcTimestamp | None


class NewKey(KeyPublic):
    key: str = Field(description="Send as `Authorization: Bearer <key>`. Shown once, now.")


class Me(BaseModel):
    role: str
    municipality: str | None
    key_id: str | None = Field(description="null for an anonymous caller.")

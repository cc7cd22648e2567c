"""Units of measurement a sensor type may declare for its metrics, and which fit which metric.

Unit symbols are UCUM-style ASCII (``ug/m3`` for µg/m³, ``degC``, ``uS/cm``), as QUDT and OGC
SensorThings clients expect them; they are case-sensitive (``K`` is kelvin, ``k`` nothing).
Well-known metric names accept only the units of their quantity (``pm25`` in ``ug/m3``, a
temperature in ``degC`` or ``K``), so a type cannot declare particulate matter in centimetres;
any other metric name accepts any unit of the vocabulary.

The vocabulary is deliberately small: a unit that is missing is added here, with a test,
rather than accepted as free text.

For linked data and the SensorThings API every symbol also has its UCUM code (the case-sensitive
``c/s`` form of https://ucum.org) and, where QUDT defines one, its QUDT unit IRI
(``http://qudt.org/vocab/unit/...``): :data:`UNIT_REFS`. UCUM has no A-weighting and no turbidity
or salinity units, so those use UCUM annotations (``dB{A}``, ``{NTU}``, ``{PSU}``); QUDT has no
practical salinity unit, so ``PSU`` points at QUDT's ``UNITLESS`` (practical salinity is a
dimensionless ratio, PSS-78).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# symbol -> what it is (shown in error messages and the docs)
UNITS: Final[dict[str, str]] = {
    # concentrations
    "ug/m3": "microgram per cubic metre",
    "mg/m3": "milligram per cubic metre",
    "ppb": "parts per billion (volume)",
    "ppm": "parts per million (volume)",
    "mg/l": "milligram per litre",
    # temperature
    "degC": "degree Celsius",
    "K": "kelvin",
    # ratios
    "%": "percent",
    "1": "dimensionless (a plain number)",
    # length, level, precipitation
    "mm": "millimetre",
    "cm": "centimetre",
    "m": "metre",
    "mm/h": "millimetre per hour",
    # sound
    "dB(A)": "A-weighted decibel",
    "dB": "decibel",
    # counts
    "count": "number of events or objects",
    "count/h": "number per hour",
    # water
    "uS/cm": "microsiemens per centimetre",
    "mS/cm": "millisiemens per centimetre",
    "PSU": "practical salinity unit",
    "g/kg": "gram per kilogram",
    "NTU": "nephelometric turbidity unit",
    "pH": "pH (acidity)",
    "m3/s": "cubic metre per second",
    "l/s": "litre per second",
    # motion, direction
    "km/h": "kilometre per hour",
    "m/s": "metre per second",
    "deg": "degree of angle (direction)",
    # pressure, radiation, light, electricity
    "hPa": "hectopascal",
    "Pa": "pascal",
    "W/m2": "watt per square metre",
    "lx": "lux",
    "V": "volt",
}

QUDT_UNIT = "http://qudt.org/vocab/unit/"


@dataclass(frozen=True, slots=True)
class UnitRef:
    """How a unit symbol is written elsewhere: its UCUM code and its QUDT unit IRI."""

    symbol: str  # meetnet's symbol, as registered
    ucum: str
    qudt: str  # full IRI

    @property
    def name(self) -> str:
        return UNITS[self.symbol]


def _ref(symbol: str, ucum: str, qudt: str) -> UnitRef:
    return UnitRef(symbol, ucum, QUDT_UNIT + qudt)


UNIT_REFS: Final[dict[str, UnitRef]] = {
    r.symbol: r
    for r in (
        _ref("ug/m3", "ug/m3", "MicroGM-PER-M3"),
        _ref("mg/m3", "mg/m3", "MilliGM-PER-M3"),
        _ref("ppb", "[ppb]", "PPB"),
        _ref("ppm", "[ppm]", "PPM"),
        _ref("mg/l", "mg/L", "MilliGM-PER-L"),
        _ref("degC", "Cel", "DEG_C"),
        _ref("K", "K", "K"),
        _ref("%", "%", "PERCENT"),
        _ref("1", "1", "UNITLESS"),
        _ref("mm", "mm", "MilliM"),
        _ref("cm", "cm", "CentiM"),
        _ref("m", "m", "M"),
        _ref("mm/h", "mm/h", "MilliM-PER-HR"),
        _ref("dB(A)", "dB{A}", "DeciB_A"),
        _ref("dB", "dB", "DeciB"),
        _ref("count", "{count}", "NUM"),
        _ref("count/h", "{count}/h", "NUM-PER-HR"),
        _ref("uS/cm", "uS/cm", "MicroS-PER-CentiM"),
        _ref("mS/cm", "mS/cm", "MilliS-PER-CentiM"),
        _ref("PSU", "{PSU}", "UNITLESS"),
        _ref("g/kg", "g/kg", "GM-PER-KiloGM"),
        _ref("NTU", "{NTU}", "NTU"),
        _ref("pH", "[pH]", "PH"),
        _ref("m3/s", "m3/s", "M3-PER-SEC"),
        _ref("l/s", "L/s", "L-PER-SEC"),
        _ref("km/h", "km/h", "KiloM-PER-HR"),
        _ref("m/s", "m/s", "M-PER-SEC"),
        _ref("deg", "deg", "DEG"),
        _ref("hPa", "hPa", "HectoPA"),
        _ref("Pa", "Pa", "PA"),
        _ref("W/m2", "W/m2", "W-PER-M2"),
        _ref("lx", "lx", "LUX"),
        _ref("V", "V", "V"),
    )
}


def unit_ref(symbol: str) -> UnitRef | None:
    """The UCUM code and QUDT IRI of a registered unit symbol (None for a symbol outside the
    vocabulary, e.g. one stored before the vocabulary existed)."""
    return UNIT_REFS.get(symbol)


_CONCENTRATION_AIR = ("ug/m3",)
_GAS = ("ug/m3", "ppb")
_TEMPERATURE = ("degC", "K")
_SPEED = ("km/h", "m/s")
_LEVEL = ("cm", "m", "mm")
_NOISE = ("dB(A)",)
_COUNT = ("count",)

# Well-known metric names and the units that fit them.
METRIC_UNITS: Final[dict[str, tuple[str, ...]]] = {
    "pm1": _CONCENTRATION_AIR,
    "pm25": _CONCENTRATION_AIR,
    "pm10": _CONCENTRATION_AIR,
    "no2": _GAS,
    "no": _GAS,
    "o3": _GAS,
    "so2": _GAS,
    "co": ("mg/m3", "ppm"),
    "co2": ("ppm",),
    "temperature": _TEMPERATURE,
    "humidity": ("%",),
    "relative_humidity": ("%",),
    "pressure": ("hPa", "Pa"),
    "water_level": ("cm", "m"),
    "water_height": ("cm", "m"),
    "rainfall": ("mm",),
    "rain_intensity": ("mm/h",),
    "laeq": _NOISE,
    "lamax": _NOISE,
    "lamin": _NOISE,
    "la10": _NOISE,
    "la90": _NOISE,
    "count": _COUNT,
    "vehicles": _COUNT,
    "cyclists": _COUNT,
    "pedestrians": _COUNT,
    "conductivity": ("uS/cm", "mS/cm"),
    "salinity": ("PSU", "g/kg"),
    "turbidity": ("NTU",),
    "ph": ("pH",),
    "dissolved_oxygen": ("mg/l", "%"),
    "flow": ("m3/s", "l/s"),
    "speed": _SPEED,
    "wind_speed": ("m/s", "km/h"),
    "wind_direction": ("deg",),
    "solar_radiation": ("W/m2",),
    "illuminance": ("lx",),
    "battery_voltage": ("V",),
    "battery": ("%", "V"),
}

# Families by name suffix, for names not listed above: "air_temperature", "bike_count".
_SUFFIXES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("_temperature", _TEMPERATURE),
    ("_humidity", ("%",)),
    ("_count", _COUNT),
    ("_speed", _SPEED),
    ("_level", _LEVEL),
    ("_laeq", _NOISE),
    ("_lamax", _NOISE),
)


def allowed_units(metric: str) -> tuple[str, ...] | None:
    """The units that fit ``metric``, or None when any unit of the vocabulary does."""
    if metric in METRIC_UNITS:
        return METRIC_UNITS[metric]
    for suffix, units in _SUFFIXES:
        if metric.endswith(suffix):
            return units
    return None


def check_unit(metric: str, unit: str) -> str | None:
    """None when ``unit`` is fine for ``metric``; else a message saying what to use instead."""
    fits = allowed_units(metric)
    if unit not in UNITS:
        hint = (
            f"use one of: {', '.join(fits)}"
            if fits
            else f"known units: {', '.join(sorted(UNITS, key=str.lower))}"
        )
        return f"unknown unit {unit!r} (units are case-sensitive, UCUM-style); {hint}"
    if fits is not None and unit not in fits:
        return f"unit {unit!r} does not fit metric {metric!r}; use one of: {', '.join(fits)}"
    return None

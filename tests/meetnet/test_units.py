"""meetnet/units.py: which units fit which metric."""

from __future__ import annotations

import pytest

from meetnet.units import METRIC_UNITS, UNITS, allowed_units, check_unit


@pytest.mark.parametrize(
    ("metric", "unit"),
    [
        ("pm25", "ug/m3"),
        ("pm10", "ug/m3"),
        ("no2", "ug/m3"),
        ("temperature", "degC"),
        ("temperature", "K"),
        ("water_temperature", "degC"),
        ("humidity", "%"),
        ("water_level", "cm"),
        ("water_level", "m"),
        ("laeq", "dB(A)"),
        ("lamax", "dB(A)"),
        ("vehicles", "count"),
        ("bike_count", "count"),
        ("conductivity", "uS/cm"),
        ("conductivity", "mS/cm"),
        ("salinity", "PSU"),
        ("salinity", "g/kg"),
        ("speed", "km/h"),
        ("speed", "m/s"),
        ("value", "1"),
        ("anything_else", "hPa"),
    ],
)
def test_units_that_fit_are_accepted(metric: str, unit: str) -> None:
    assert check_unit(metric, unit) is None


@pytest.mark.parametrize(
    ("metric", "unit", "says"),
    [
        ("pm25", "cm", "use one of: ug/m3"),
        ("temperature", "degF", "unknown unit 'degF'"),
        ("temperature", "dB(A)", "use one of: degC, K"),
        ("laeq", "dB", "use one of: dB(A)"),
        ("salinity", "%", "use one of: PSU, g/kg"),
        ("anything_else", "furlong", "known units: %"),
        ("pm25", "UG/M3", "case-sensitive"),
    ],
)
def test_units_that_do_not_fit_are_refused_naming_the_allowed_ones(
    metric: str, unit: str, says: str
) -> None:
    problem = check_unit(metric, unit)
    assert problem is not None and says in problem


def test_every_well_known_metric_names_units_of_the_vocabulary() -> None:
    for metric, units in METRIC_UNITS.items():
        assert units and set(units) <= set(UNITS), metric
    assert allowed_units("mystery") is None


def test_every_unit_has_a_ucum_code_and_a_qudt_iri() -> None:
    from meetnet.units import QUDT_UNIT, UNIT_REFS, unit_ref

    assert set(UNIT_REFS) == set(UNITS)
    for symbol, ref in UNIT_REFS.items():
        assert ref.symbol == symbol
        assert ref.qudt.startswith(QUDT_UNIT) and len(ref.qudt) > len(QUDT_UNIT)
        assert ref.ucum and " " not in ref.ucum
        assert ref.name == UNITS[symbol]
    assert unit_ref("degC") is not None and unit_ref("degC").ucum == "Cel"  # type: ignore[union-attr]
    assert unit_ref("ug/m3").qudt == QUDT_UNIT + "MicroGM-PER-M3"  # type: ignore[union-attr]
    assert unit_ref("furlong") is None

"""What well-known metric names mean, for the SensorThings API and linked data: a label for
people and, where a shared vocabulary defines the quantity, its IRI.

Air pollutants point at the EEA/INSPIRE air-quality pollutant code list
(``http://dd.eionet.europa.eu/vocabulary/aq/pollutant/``), which IRCEL-CELINE and the
European air-quality reporting use; physical quantities at QUDT quantity kinds. A metric
without an entry here is described by meetnet's own IRI (``<api>/ld/properties/<metric>``).
"""

from __future__ import annotations

from typing import Final

EEA_POLLUTANT = "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/"
QUDT_QUANTITY = "http://qudt.org/vocab/quantitykind/"

# metric -> (label, IRI or None)
METRICS: Final[dict[str, tuple[str, str | None]]] = {
    "pm1": ("Particulate matter < 1 µm (PM1), mass concentration", None),
    "pm25": ("Particulate matter < 2.5 µm (PM2.5), mass concentration", EEA_POLLUTANT + "6001"),
    "pm10": ("Particulate matter < 10 µm (PM10), mass concentration", EEA_POLLUTANT + "5"),
    "no2": ("Nitrogen dioxide (NO2)", EEA_POLLUTANT + "8"),
    "no": ("Nitrogen monoxide (NO)", EEA_POLLUTANT + "38"),
    "o3": ("Ozone (O3)", EEA_POLLUTANT + "7"),
    "so2": ("Sulphur dioxide (SO2)", EEA_POLLUTANT + "1"),
    "co": ("Carbon monoxide (CO)", EEA_POLLUTANT + "10"),
    "co2": ("Carbon dioxide (CO2)", None),
    "temperature": ("Air temperature", QUDT_QUANTITY + "Temperature"),
    "humidity": ("Relative humidity", QUDT_QUANTITY + "RelativeHumidity"),
    "relative_humidity": ("Relative humidity", QUDT_QUANTITY + "RelativeHumidity"),
    "pressure": ("Atmospheric pressure", QUDT_QUANTITY + "Pressure"),
    "water_level": ("Water level", None),
    "water_height": ("Water height", None),
    "rainfall": ("Precipitation amount", None),
    "laeq": ("Equivalent continuous A-weighted sound level (LAeq)", None),
    "lamax": ("Maximum A-weighted sound level (LAmax)", None),
    "lamin": ("Minimum A-weighted sound level (LAmin)", None),
    "la10": ("A-weighted sound level exceeded 10 % of the time (LA10)", None),
    "la90": ("A-weighted sound level exceeded 90 % of the time (LA90)", None),
    "vehicles": ("Number of vehicles", None),
    "cyclists": ("Number of cyclists", None),
    "pedestrians": ("Number of pedestrians", None),
    "conductivity": ("Electrical conductivity of water", None),
    "salinity": ("Salinity", None),
    "turbidity": ("Turbidity", None),
    "ph": ("pH", None),
    "dissolved_oxygen": ("Dissolved oxygen", None),
    "flow": ("Discharge (volume flow rate)", None),
    "speed": ("Speed", QUDT_QUANTITY + "Speed"),
    "wind_speed": ("Wind speed", QUDT_QUANTITY + "Speed"),
    "wind_direction": ("Wind direction", None),
    "solar_radiation": ("Solar irradiance", QUDT_QUANTITY + "Irradiance"),
    "illuminance": ("Illuminance", QUDT_QUANTITY + "Illuminance"),
    "battery_voltage": ("Battery voltage", QUDT_QUANTITY + "Voltage"),
}


def label(metric: str) -> str | None:
    entry = METRICS.get(metric)
    return entry[0] if entry else None


def definition(metric: str) -> str | None:
    """The shared IRI of the quantity ``metric`` measures, if a vocabulary defines one."""
    entry = METRICS.get(metric)
    return entry[1] if entry else None

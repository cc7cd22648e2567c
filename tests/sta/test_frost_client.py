"""A real SensorThings client written for another server, FROST-Server's Python client
(PyPI ``frost-sta-client``), against meetnet over HTTP: it lists Things and Datastreams,
expands, filters, counts and pages through Observations by following @iot.nextLink."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import frost_sta_client as fsc
import pytest
import uvicorn

from api.main import create_app
from api.schemas import rfc3339_utc
from meetnet import procs
from meetnet.settings import Settings
from tests.sta.conftest import N_READINGS, PUBLIC, SENSORS, START, STEP, TYPES, StaWorld, value_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(sta_ro: StaWorld, base_settings: Settings) -> Iterator[fsc.SensorThingsService]:
    port = procs.free_port()
    config = uvicorn.Config(
        create_app(base_settings), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield fsc.SensorThingsService(f"http://127.0.0.1:{port}/sta/v1.1")
    finally:
        server.should_exit = True
        thread.join(10)


def test_lists_things_and_datastreams(service: fsc.SensorThingsService) -> None:
    things = list(service.things().query().top(2).list())  # two pages of two
    assert sorted(t.id for t in things) == sorted(PUBLIC)
    assert {t.name for t in things} == {f"name {s}" for s in PUBLIC}
    datastreams = list(service.datastreams().query().expand("Thing,ObservedProperty").list())
    expected = sorted(f"{s}:{m}" for s in PUBLIC for m, *_ in TYPES[SENSORS[s][2]])
    assert sorted(d.id for d in datastreams) == expected
    for d in datastreams:
        sensor, metric = d.id.split(":")
        assert d.thing.id == sensor and d.observed_property.id == metric
        assert d.unit_of_measurement.symbol in ("ug/m3", "degC", "dB(A)")
    one = service.datastreams().find("gent-air-1:pm25")
    assert one.name == "name gent-air-1 pm25"
    assert one.unit_of_measurement.definition == "http://qudt.org/vocab/unit/MicroGM-PER-M3"


def test_filters_counts_and_pages_through_observations(service: fsc.SensorThingsService) -> None:
    ds = service.datastreams().find("gent-air-2:temperature")
    lo, hi = START + 40 * STEP, START + 400 * STEP
    query = (
        ds.get_observations()
        .query()
        .filter(f"phenomenonTime ge {rfc3339_utc(lo)} and phenomenonTime lt {rfc3339_utc(hi)}")
        .orderby("phenomenonTime", "asc")
        .top(100)
        .count()
    )
    observations = query.list()
    assert observations.count == 360
    got = [(o.phenomenon_time, o.result) for o in observations]  # follows three next links
    assert got == [
        (
            rfc3339_utc(START + i * STEP),
            value_of("gent-air-2", "temperature", i),
        )
        for i in range(40, 400)
    ]


def test_expands_observations_and_filters_on_a_path(service: fsc.SensorThingsService) -> None:
    datastreams = (
        service.datastreams()
        .query()
        .filter("Thing/id eq 'gent-air-1'")
        .expand("Observations($top=3;$orderby=phenomenonTime desc)")
        .list()
    )
    ds = {d.id: d for d in datastreams}
    assert sorted(ds) == ["gent-air-1:pm25", "gent-air-1:temperature"]
    latest = [o.result for o in ds["gent-air-1:pm25"].observations.entities]
    assert latest == [value_of("gent-air-1", "pm25", N_READINGS - 1 - i) for i in range(3)]
    newest = (
        service.observations()
        .query()
        .filter("Datastream/Thing/id eq 'gent-noise-1'")
        .orderby("phenomenonTime", "desc")
        .top(1)
        .list()
    )
    assert newest.entities[0].result == value_of("gent-noise-1", "laeq", N_READINGS - 1)

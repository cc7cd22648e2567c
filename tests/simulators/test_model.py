"""The simulator's model: plausible, deterministic readings, encoded exactly in wire format v1."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from meetnet import wire
from simulators import model
from simulators.model import CITIES, METRICS, RANGES, Encoder, make_fleet, readings

BRUSSELS = ZoneInfo("Europe/Brussels")
PREFIX = "meetnet/v1"


def local_ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=BRUSSELS).timestamp() * 1000)


def weekdays(year: int, month: int) -> list[int]:
    return [d for d in range(1, 29) if datetime(year, month, d).weekday() < 5]


def test_sensor_ids_and_places() -> None:
    fleet = make_fleet(250, seed=3)
    assert fleet.ids[0] == "sim-air-0001"
    assert fleet.ids[-1] == "sim-air-0250"
    assert len(set(fleet.ids)) == 250
    assert all(wire.SENSOR_ID_RE.match(s) for s in fleet.ids)
    assert make_fleet(12_345).ids[-1] == "sim-air-12345"
    # Every sensor sits within a few km of its city's centre, in Flanders.
    lat0 = np.array([c.lat for c in CITIES])[fleet.city]
    lon0 = np.array([c.lon for c in CITIES])[fleet.city]
    assert np.all(np.abs(fleet.lat - lat0) <= 0.061)
    assert np.all(np.abs(fleet.lon - lon0) <= 0.091)
    assert np.all((fleet.lat > 50.6) & (fleet.lat < 51.5))
    assert np.all((fleet.lon > 2.5) & (fleet.lon < 5.95))
    assert {fleet.city_name(i) for i in range(250)} == {c.name for c in CITIES}


def test_fleet_needs_a_sensor() -> None:
    with pytest.raises(ValueError):
        make_fleet(0)


def test_values_in_physical_ranges_all_year() -> None:
    fleet = make_fleet(400, seed=1)
    start = local_ms(2026, 1, 1, 0)
    hours = np.arange(0, 365 * 24, 7)  # every 7th hour of a year: all hours, all seasons
    idx = np.tile(np.arange(400), hours.size)
    ts = np.repeat(start + hours * 3_600_000, 400)
    r = readings(fleet, idx, ts)
    assert r.shape == (idx.size, len(METRICS))
    assert np.isfinite(r).all()
    assert (r >= RANGES[:, 0]).all()
    assert (r <= RANGES[:, 1]).all()
    assert (r[:, 1] >= r[:, 0]).all()  # pm10 includes pm2.5
    # Ranges are physical limits, not what the weather usually does.
    assert np.percentile(r[:, 0], 99) < 80
    assert r[:, 3].min() > -15 and r[:, 3].max() < 40


def test_deterministic_with_a_seed_and_pure() -> None:
    ts = local_ms(2026, 11, 29, 19)
    idx = np.arange(50)
    a = readings(make_fleet(50, seed=42), idx, ts)
    b = readings(make_fleet(50, seed=42), idx, ts)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, readings(make_fleet(50, seed=43), idx, ts))
    # One sensor asked alone, or in another order, gets the same values: nothing is stateful.
    fleet = make_fleet(50, seed=42)
    np.testing.assert_array_equal(readings(fleet, [7], ts)[0], a[7])
    np.testing.assert_array_equal(readings(fleet, idx[::-1], ts), a[::-1])
    # Per-sensor timestamps work too; a different time gives different values.
    per_sensor = readings(fleet, idx, np.full(50, ts))
    np.testing.assert_array_equal(per_sensor, a)
    assert not np.array_equal(a, readings(fleet, idx, ts + 60_000))


def test_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        readings(make_fleet(3), [3], 0)


def test_sensors_differ_and_values_vary() -> None:
    fleet = make_fleet(200, seed=5)
    r = readings(fleet, np.arange(200), local_ms(2026, 3, 10, 9))
    for m in range(len(METRICS)):
        assert np.unique(r[:, m]).size > 50, METRICS[m]


def _mean_at(fleet: model.Fleet, month: int, hour: int) -> np.ndarray:
    idx = np.arange(len(fleet))
    rows = [readings(fleet, idx, local_ms(2026, month, d, hour)) for d in weekdays(2026, month)]
    return np.concatenate(rows).mean(axis=0)


@pytest.mark.parametrize("month", [1, 4, 7, 10])
def test_daily_cycle(month: int) -> None:
    fleet = make_fleet(300, seed=9)
    night, morning = _mean_at(fleet, month, 3), _mean_at(fleet, month, 8)
    early, afternoon = _mean_at(fleet, month, 5), _mean_at(fleet, month, 15)
    evening = _mean_at(fleet, month, 18)
    pm25, pm10, no2, temp, hum = range(5)
    assert morning[pm25] > night[pm25] * 1.15
    assert morning[pm10] > night[pm10] * 1.15
    assert morning[no2] > night[no2] * 1.5
    assert evening[no2] > night[no2] * 1.5
    assert afternoon[temp] > early[temp] + 3
    assert afternoon[hum] < early[hum] - 5


def test_seasons() -> None:
    fleet = make_fleet(200, seed=2)
    jan, jul = _mean_at(fleet, 1, 12), _mean_at(fleet, 7, 12)
    assert jul[3] > jan[3] + 10  # temperature
    assert jan[0] > jul[0]  # pm2.5 (heating)
    assert 0 < jan[3] < 10 and 15 < jul[3] < 30


def _check(topic: str, payload: bytes) -> wire.Accepted:
    return wire.check_message(
        topic,
        payload,
        prefix=PREFIX,
        max_bytes=256 * 1024,
        max_readings=10_000,
        received_ms=0,
    )


def test_batch_messages_are_wire_format() -> None:
    fleet = make_fleet(30, seed=4)
    enc = Encoder(fleet, PREFIX, "batch")
    assert enc.readings_per_message == 5
    idx = np.array([0, 5, 29, 5])
    ts = np.array([1, 2, 3, 4]) + local_ms(2026, 11, 29, 8)
    values = readings(fleet, idx, ts)
    msgs = enc.encode(idx, ts, values)
    assert len(msgs) == 4
    for k, (topic, payload) in enumerate(msgs):
        sid = fleet.ids[idx[k]]
        assert topic == f"{PREFIX}/sensors/{sid}"
        acc = _check(topic, payload)
        assert acc.parts[0][:2] == (sid, 5)
        body = json.loads(payload)
        assert [r["metric"] for r in body["readings"]] == list(METRICS)
        assert all(r["ts"] == int(ts[k]) and type(r["ts"]) is int for r in body["readings"])
        assert [r["value"] for r in body["readings"]] == values[k].tolist()


def test_single_messages_are_wire_format() -> None:
    fleet = make_fleet(8, seed=4)
    enc = Encoder(fleet, PREFIX, "single")
    assert enc.readings_per_message == 1
    ts = local_ms(2026, 7, 1, 17, 30)
    idx = np.arange(8)
    values = readings(fleet, idx, ts)
    msgs = enc.tick(idx, ts)
    assert len(msgs) == 8 * 5
    for k, (topic, payload) in enumerate(msgs):
        s, m = divmod(k, 5)
        assert topic == f"{PREFIX}/sensors/{fleet.ids[s]}"
        assert _check(topic, payload).parts[0][:2] == (fleet.ids[s], 1)
        assert json.loads(payload) == {"metric": METRICS[m], "ts": ts, "value": values[s, m]}


def test_encoded_numbers_are_json_and_round_trip() -> None:
    fleet = make_fleet(2)
    enc = Encoder(fleet, PREFIX, "single")
    odd = np.array([[0.1 + 0.2, -0.0, 1e-7, 123456.789, 5.0]] * 2)
    msgs = enc.encode([0, 1], 1_700_000_000_000, odd)
    for k, (topic, payload) in enumerate(msgs):
        _check(topic, payload)
        assert json.loads(payload)["value"] == odd[k // 5, k % 5]
    with pytest.raises(ValueError):
        enc.encode([0], 0, np.array([[np.nan, 1.0, 1.0, 1.0, 1.0]]))


def test_encoder_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError):
        Encoder(make_fleet(1), PREFIX, "bulk")


def test_custom_prefix_in_topics() -> None:
    enc = Encoder(make_fleet(3), "test-abc/v1", "batch")
    topic, payload = enc.tick([2], local_ms(2026, 2, 2, 2))[0]
    assert topic == "test-abc/v1/sensors/sim-air-0003"
    wire.check_message(
        topic, payload, prefix="test-abc/v1", max_bytes=4096, max_readings=5, received_ms=0
    )


@pytest.mark.parametrize("mode", ["batch", "single"])
def test_gateway_form_carries_the_same_readings_on_each_sensor_s_gateway_topic(mode: str) -> None:
    fleet = make_fleet(6, seed=2)
    gateways = [f"gw-{fleet.city_name(i)}" for i in range(6)]
    device = Encoder(fleet, PREFIX, mode)
    via_gw = Encoder(fleet, PREFIX, mode, gateways=gateways)
    idx = np.array([0, 3, 5])
    ts = local_ms(2026, 3, 3, 9)
    values = readings(fleet, idx, ts)
    plain, wrapped = device.encode(idx, ts, values), via_gw.encode(idx, ts, values)
    assert len(plain) == len(wrapped)
    for (_, p), (topic, w) in zip(plain, wrapped, strict=True):
        [group] = json.loads(w)["sensors"]
        assert topic == f"{PREFIX}/gateways/{gateways[fleet.ids.index(group['sensor'])]}"
        body = json.loads(p)
        assert group["readings"] == (body["readings"] if mode == "batch" else [body])
        acc = _check(topic, w)
        assert acc.kind == "gateways" and acc.parts[0][0] == group["sensor"]
    with pytest.raises(ValueError):
        Encoder(fleet, PREFIX, mode, gateways=gateways[:2])

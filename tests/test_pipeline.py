"""End to end on the real engines: MQTT -> gateway -> Kafka -> processor -> TimescaleDB -> API."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from meetnet import procs
from meetnet.settings import Settings
from meetnet.wire import Reason
from tests.support import (
    count_readings,
    publish_all,
    read_deadletters,
    register_sensors,
    start_worker,
    wait_subscribed,
    wait_until,
)

pytestmark = pytest.mark.integration


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def test_valid_readings_reach_the_api_and_each_malformed_one_is_deadlettered_with_its_reason(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    p = stack.mqtt_topic_prefix
    now = int(time.time() * 1000) // 1000 * 1000
    # Registered, so the API serves their readings (unregistered sensors are 404 there).
    register_sensors(db, ["e2e-air-1", "e2e-air-2", "e2e-air-3"], gateway="e2e-gw-1")
    dev = f"{p}/sensors/e2e-air-1"
    valid: list[tuple[str, bytes]] = [
        (dev, json.dumps({"metric": "pm25", "ts": now, "value": 12.5}).encode()),
        (dev, json.dumps({"metric": "pm25", "ts": _iso(now + 1000), "value": 13}).encode()),
        (
            dev,
            json.dumps(
                {
                    "sensor": "e2e-air-1",
                    "readings": [
                        {"metric": "pm10", "ts": now, "value": 20.25},
                        {"metric": "no2", "ts": _iso(now), "value": 31.0},
                    ],
                }
            ).encode(),
        ),
        # A local-time offset is stored as the same instant in UTC.
        (
            dev,
            json.dumps(
                {
                    "metric": "pm25",
                    "ts": time.strftime(
                        "%Y-%m-%dT%H:%M:%S+01:00", time.gmtime(now / 1000 + 3600 + 2)
                    ),
                    "value": 14.0,
                }
            ).encode(),
        ),
        (
            f"{p}/gateways/e2e-gw-1",
            json.dumps(
                {
                    "sensors": [
                        {
                            "sensor": "e2e-air-2",
                            "readings": [{"metric": "pm25", "ts": now, "value": 1.0}],
                        },
                        {
                            "sensor": "e2e-air-3",
                            "readings": [
                                {"metric": "pm25", "ts": now, "value": 2.0},
                                {"metric": "pm25", "ts": now + 1000, "value": 3.0},
                            ],
                        },
                    ]
                }
            ).encode(),
        ),
    ]
    n_valid = 1 + 1 + 2 + 1 + 3
    year_ms = 365 * 86400 * 1000
    bad: list[tuple[str, bytes, Reason]] = [
        (dev, b'{"metric": "pm25", "ts": 1, "value": ', Reason.INVALID_JSON),
        (dev, b'{"metric": "pm25", "ts": %d, "value": "12"}' % now, Reason.WRONG_TYPE),
        (dev, b'{"metric": "pm25", "ts": %d, "value": NaN}' % now, Reason.NON_FINITE_VALUE),
        (dev, b'{"metric": "pm25", "ts": %d, "value": Infinity}' % now, Reason.NON_FINITE_VALUE),
        (dev, b'{"metric": "pm25", "ts": %d, "value": -Infinity}' % now, Reason.NON_FINITE_VALUE),
        (dev, b'{"metric": "pm25", "value": 3}', Reason.MISSING_FIELD),
        (
            dev,
            b'{"metric": "pm25", "ts": %d, "value": 3, "unit": "ug"}' % now,
            Reason.UNKNOWN_FIELD,
        ),
        (
            dev,
            b'{"readings": [{"metric": "pm25", "ts": %d, "value": 3, "x": 1}]}' % now,
            Reason.UNKNOWN_FIELD,
        ),
        (
            dev,
            b'{"metric": "pm25", "ts": %d, "value": 1, "pad": "%s"}'
            % (now, b"x" * (stack.max_payload_bytes + 10)),
            Reason.PAYLOAD_TOO_LARGE,
        ),
        (
            dev,
            b'{"metric": "pm25", "ts": %d, "value": 1}' % (now - 3 * year_ms),
            Reason.TIMESTAMP_OUT_OF_RANGE,
        ),
        (
            dev,
            b'{"metric": "pm25", "ts": %d, "value": 1}' % (now + 2 * year_ms),
            Reason.TIMESTAMP_OUT_OF_RANGE,
        ),
        (
            dev,
            b'{"metric": "pm25", "ts": "2026-13-45T10:00:00Z", "value": 1}',
            Reason.INVALID_TIMESTAMP,
        ),
        (
            dev,
            b'{"metric": "pm25", "ts": "2026-11-29T10:00:00", "value": 1}',
            Reason.INVALID_TIMESTAMP,
        ),
        (
            dev,
            b'{"sensor": "e2e-air-1/x", "metric": "pm25", "ts": %d, "value": 1}' % now,
            Reason.INVALID_SENSOR_ID,
        ),
        (
            f"{p}/gateways/e2e-gw-1",
            b'{"sensors": [{"sensor": "a+b", "readings": '
            b'[{"metric": "pm25", "ts": %d, "value": 1}]}]}' % now,
            Reason.INVALID_SENSOR_ID,
        ),
        (
            f"{p}/sensors/e2e-air-1/extra",
            b'{"metric": "pm25", "ts": %d, "value": 1}' % now,
            Reason.INVALID_TOPIC,
        ),
        (
            f"{p}/sensors/E2E",
            b'{"metric": "pm25", "ts": %d, "value": 1}' % now,
            Reason.INVALID_SENSOR_ID,
        ),
        (
            dev,
            b'{"sensor": "e2e-air-9", "metric": "pm25", "ts": %d, "value": 1}' % now,
            Reason.SENSOR_MISMATCH,
        ),
        (dev, b'{"readings": []}', Reason.EMPTY_BATCH),
    ]
    # Valid and malformed messages interleaved: the bad ones must not disturb their neighbours.
    messages: list[tuple[str, bytes]] = []
    for i in range(max(len(valid), len(bad))):
        if i < len(bad):
            messages.append((bad[i][0], bad[i][1]))
        if i < len(valid):
            messages.append(valid[i])

    register_sensors(db, ["e2e-air-1"])
    register_sensors(db, ["e2e-air-2", "e2e-air-3"], gateway="e2e-gw-1")
    gw = start_worker("gateway", stack, tmp_path, {"MEETNET_GATEWAY_CLIENT_ID": "e2e-gw"})
    pr = start_worker("processor", stack, tmp_path)
    try:
        wait_subscribed(tmp_path / "gateway.log")
        publish_all(stack, messages)
        wait_until(lambda: count_readings(db) == n_valid, 60, f"{n_valid} stored readings")
        letters = read_deadletters(stack, expect=len(bad), timeout=30)
        assert gw.poll() is None and pr.poll() is None, "a service died on bad input"
    finally:
        procs.stop(gw)
        procs.stop(pr)

    assert count_readings(db) == n_valid
    assert sorted(d.reason for d in letters) == sorted(r.value for _, _, r in bad)
    for d in letters:
        assert d.headers["meetnet.detail"], "every dead letter explains itself"
        if d.headers["meetnet.stage"] == "gateway":
            # The original bytes and topic, untouched.
            assert (d.headers["meetnet.source"][len("mqtt:") :], d.value) in {
                (t, b) for t, b, _ in bad
            }

    from api.main import create_app

    with TestClient(create_app(stack)) as client:
        frm = _iso(now - 60_000)
        to = _iso(now + 3_600_000 + 10_000)
        r = client.get("/v1/sensors/e2e-air-1/readings", params={"from": frm, "to": to})
        assert r.status_code == 200, r.text
        got = [(x["metric"], x["value"]) for x in r.json()["readings"]]
        assert sorted(got) == sorted(
            [("pm25", 12.5), ("pm25", 13.0), ("pm10", 20.25), ("no2", 31.0), ("pm25", 14.0)]
        )
        r = client.get(
            "/v1/sensors/e2e-air-3/readings", params={"metric": "pm25", "from": frm, "to": to}
        )
        assert [x["value"] for x in r.json()["readings"]] == [2.0, 3.0]
        # The +01:00 reading is stored as the UTC instant it denotes.
        r = client.get(
            "/v1/sensors/e2e-air-1/readings", params={"metric": "pm25", "from": frm, "to": to}
        )
        stamps = [datetime.fromisoformat(x["ts"]) for x in r.json()["readings"]]
        assert [int(t.timestamp() * 1000) for t in stamps] == [now, now + 1000, now + 2000]
        assert all(t.utcoffset() == timedelta(0) for t in stamps)


def test_two_gateways_on_one_shared_subscription_split_the_messages_and_lose_none(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    n = 2000
    messages = [
        (
            f"{stack.mqtt_topic_prefix}/sensors/share-{i % 50:02d}",
            json.dumps({"metric": "pm25", "ts": now - i, "value": float(i)}).encode(),
        )
        for i in range(n)
    ]
    register_sensors(db, [f"share-{i:02d}" for i in range(50)])
    gateways = [
        start_worker("gateway", stack, tmp_path / name, {"MEETNET_GATEWAY_CLIENT_ID": name})
        for name in ("share-gw-a", "share-gw-b")
    ]
    pr = start_worker("processor", stack, tmp_path)
    try:
        for name in ("share-gw-a", "share-gw-b"):
            wait_subscribed(tmp_path / name / "gateway.log")
        publish_all(stack, messages)
        wait_until(lambda: count_readings(db) == n, 60, f"{n} stored readings")
    finally:
        for p in [*gateways, pr]:
            procs.stop(p)
    handled = []
    for name in ("share-gw-a", "share-gw-b"):
        log = (tmp_path / name / "gateway.log").read_text()
        handled.append(int(log.rsplit("gateway stopped messages=", 1)[1].split()[0]))
    assert all(h > 0 for h in handled), f"one gateway got nothing: {handled}"
    assert sum(handled) == n, f"messages per gateway {handled} do not add up to {n}"
    assert count_readings(db) == n

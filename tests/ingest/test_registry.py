"""The gateway's registry checks: pure judgements, the refresh-before-reject rule on the real
database, and the dead-letter reasons end to end."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from ingest.registry import OK, Gate, judge
from meetnet import procs
from meetnet.settings import Settings
from meetnet.wire import Accepted, Reason, check_message
from store.catalog import RegistryCache, SensorInfo, Snapshot
from tests.support import (
    count_readings,
    publish_all,
    read_deadletters,
    register_sensors,
    start_worker,
    wait_subscribed,
    wait_until,
)

P = "t/v1"


def _msg(topic: str, payload: object) -> Accepted:
    return check_message(
        f"{P}/{topic}",
        json.dumps(payload).encode(),
        prefix=P,
        max_bytes=1 << 20,
        max_readings=1000,
        received_ms=0,
    )


def _one(ts: int = 1_795_978_800_000, metric: str = "pm25") -> dict[str, object]:
    return {"metric": metric, "ts": ts, "value": 1.0}


def _gw(*sensors: str) -> dict[str, object]:
    return {"sensors": [{"sensor": s, "readings": [_one()]} for s in sensors]}


SNAP = Snapshot(
    version=1,
    sensors={
        "s-ok": SensorInfo("active", None, "box"),
        "s-maint": SensorInfo("maintenance", "gw-1", "box"),
        "s-ret": SensorInfo("retired", "gw-1", "box"),
        "s-gw1": SensorInfo("active", "gw-1", "box"),
        "s-gw2": SensorInfo("active", "gw-2", "box"),
    },
    gateways={"gw-1": "active", "gw-2": "active", "gw-old": "retired"},
    type_metrics={"box": frozenset({"pm25"})},
)


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("sensors/s-ok", _one(), None),
        ("sensors/s-maint", _one(), None),  # maintenance is accepted
        ("sensors/s-gw1", _one(), None),  # a gateway's sensor may also publish itself
        ("sensors/nobody", _one(), Reason.UNKNOWN_SENSOR),
        ("sensors/s-ret", _one(), Reason.SENSOR_RETIRED),
        ("gateways/gw-9", _gw("s-gw1"), Reason.UNKNOWN_GATEWAY),
        ("gateways/gw-old", _gw("s-gw1"), Reason.GATEWAY_RETIRED),
        ("gateways/gw-1", _gw("s-gw1", "s-maint"), None),
    ],
)
def test_judge_a_whole_message(topic: str, payload: object, reason: Reason | None) -> None:
    j = judge(SNAP, _msg(topic, payload))
    if reason is None:
        assert j == OK and not j.negative
    else:
        assert j.whole is not None and j.whole[0] == reason and not j.groups
        assert j.ids == (topic.split("/")[1],)


def test_judge_rejects_only_the_offending_groups_of_a_gateway_batch() -> None:
    j = judge(SNAP, _msg("gateways/gw-1", _gw("s-gw1", "s-gw2", "nobody", "s-ret", "s-gw2")))
    assert j.whole is None
    assert {s: r for s, (r, _) in j.groups.items()} == {
        "s-gw2": Reason.GATEWAY_NOT_OWNER,
        "nobody": Reason.UNKNOWN_SENSOR,
        "s-ret": Reason.SENSOR_RETIRED,
    }
    assert set(j.ids) == {"s-gw2", "nobody", "s-ret"}
    assert "gw-1" in j.groups["s-gw2"][1]  # the detail names the gateway


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.integration
def test_a_miss_is_looked_up_before_rejecting_and_at_most_once_a_second_per_id(
    db: psycopg.Connection, base_settings: Settings
) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        cache = RegistryCache(base_settings, app="test-registry", clock=clock)
        gate = Gate(cache)
        assert await cache.reload()  # no watcher: only lookups can refresh this cache
        try:
            # Registered after the snapshot was taken: the lookup finds it, it is accepted.
            register_sensors(db, ["fresh-1"])
            clock.t += 0.01
            verdicts, retry = await gate.decide(
                [(clock.t - 0.001, _msg("sensors/fresh-1", _one()))]
            )
            assert verdicts == [OK] and retry == math.inf and cache.lookups == 1
            # Unknown: confirmed by a lookup, then rejected.
            clock.t += 0.01
            verdicts, _ = await gate.decide([(clock.t - 0.001, _msg("sensors/ghost", _one()))])
            j = verdicts[0]
            assert j is not None and j.whole is not None
            assert j.whole[0] == Reason.UNKNOWN_SENSOR and cache.lookups == 2
            # The same id again a moment later: no second lookup within the second; the
            # message is deferred (not rejected on an answer older than itself).
            clock.t += 0.2
            verdicts, retry = await gate.decide([(clock.t - 0.001, _msg("sensors/ghost", _one()))])
            assert verdicts == [None] and cache.lookups == 2
            assert retry == pytest.approx(clock.t - 0.2 + 1.0)
            # Registered meanwhile; once the second has passed it is looked up and accepted.
            register_sensors(db, ["ghost"])
            clock.t = retry
            verdicts, _ = await gate.decide([(clock.t - 0.8, _msg("sensors/ghost", _one()))])
            assert verdicts == [OK] and cache.lookups == 3
            # A message received before the last lookup needs no new one.
            verdicts, _ = await gate.decide([(clock.t - 0.9, _msg("sensors/nope", _one()))])
            assert cache.lookups == 4
            verdicts, _ = await gate.decide([(clock.t - 0.5, _msg("sensors/nope", _one()))])
            assert verdicts[0] is not None and cache.lookups == 4
        finally:
            await cache.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_with_the_database_unreachable_a_miss_is_deferred_never_rejected(
    base_settings: Settings,
) -> None:
    down = base_settings.model_copy(
        update={"database_url": SecretStr(f"postgresql://x@127.0.0.1:{procs.free_port()}/x")}
    )

    async def scenario() -> None:
        cache = RegistryCache(down, app="test-registry")
        cache.snapshot = SNAP
        cache.loaded_at = time.monotonic() - 10  # a snapshot older than the messages
        gate = Gate(cache)
        items = [
            (time.monotonic(), _msg("sensors/s-ok", _one())),
            (time.monotonic(), _msg("sensors/unknown-yet", _one())),
            (time.monotonic(), _msg("gateways/gw-1", _gw("s-gw1", "moved-here"))),
        ]
        verdicts, retry = await gate.decide(items)
        assert verdicts == [OK, None, None]  # known ones pass; misses wait for the database
        assert time.monotonic() < retry < math.inf
        await cache.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_registry_rejections_end_to_end_and_a_sensor_registered_a_moment_ago_is_stored(
    stack: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    register_sensors(db, ["ok-1"])
    db.execute("UPDATE sensors SET status = 'maintenance' WHERE sensor_id = 'ok-1'")
    register_sensors(db, ["ret-1"])
    db.execute("UPDATE sensors SET status = 'retired' WHERE sensor_id = 'ret-1'")
    register_sensors(db, ["ga-1"], gateway="gw-a")
    register_sensors(db, ["gr-1"], gateway="gw-ret")
    db.execute("UPDATE gateways SET status = 'retired' WHERE gateway_id = 'gw-ret'")
    p = stack.mqtt_topic_prefix
    now = int(time.time() * 1000)

    def one(metric: str = "pm25") -> bytes:
        return json.dumps(_one(now, metric)).encode()

    def gw(*sensors: str) -> bytes:
        return json.dumps(
            {"sensors": [{"sensor": s, "readings": [_one(now)]} for s in sensors]}
        ).encode()

    bad = [
        (f"{p}/sensors/ret-1", one(), Reason.SENSOR_RETIRED),
        (f"{p}/sensors/ghost", one(), Reason.UNKNOWN_SENSOR),
        (f"{p}/sensors/ok-1", one("co2"), Reason.UNKNOWN_METRIC),
        (f"{p}/gateways/ghost-gw", gw("ga-1"), Reason.UNKNOWN_GATEWAY),
        (f"{p}/gateways/gw-ret", gw("gr-1"), Reason.GATEWAY_RETIRED),
        (f"{p}/gateways/gw-a", gw("ga-1", "ghost-2"), Reason.UNKNOWN_SENSOR),
    ]
    gw_ = start_worker("gateway", stack, tmp_path, {"MEETNET_GATEWAY_CLIENT_ID": "reg-gw"})
    pr = start_worker("processor", stack, tmp_path)
    try:
        wait_subscribed(tmp_path / "gateway.log")
        wait_until(lambda: "registry loaded" in (tmp_path / "processor.log").read_text(), 30, "")
        publish_all(stack, [(t, b) for t, b, _ in bad] + [(f"{p}/sensors/ok-1", one())])
        # Registered, and a metric added to a type, just before publishing: the caches have
        # not heard of them yet, and must not reject them.
        register_sensors(db, ["late-1"], type_id="late-box", metrics=["fresh"])
        db.execute(
            "INSERT INTO sensor_type_metrics (type_id, metric, unit, min_value, max_value, "
            "interval_s) VALUES ('test-box', 'brandnew', '1', 0, 1, 60)"
        )
        publish_all(
            stack, [(f"{p}/sensors/late-1", one("fresh")), (f"{p}/sensors/ok-1", one("brandnew"))]
        )
        wait_until(lambda: count_readings(db) == 4, 30, "4 stored readings")
        letters = read_deadletters(stack, expect=len(bad))
    finally:
        procs.stop(gw_)
        procs.stop(pr)
    stored = db.execute(
        "SELECT s.sensor_id, s.metric FROM readings JOIN series s USING (series_id) ORDER BY 1, 2"
    ).fetchall()
    assert stored == [("ga-1", "pm25"), ("late-1", "fresh"), ("ok-1", "brandnew"), ("ok-1", "pm25")]
    assert sorted(d.reason for d in letters) == sorted(r.value for _, _, r in bad)
    by_reason = {d.reason: d for d in letters}
    assert by_reason["unknown_metric"].headers["meetnet.stage"] == "processor"
    partial = next(d for d in letters if d.headers["meetnet.source"].endswith("/gateways/gw-a"))
    assert json.loads(partial.value) == {
        "sensors": [{"sensor": "ghost-2", "readings": [_one(now)]}]
    }
    for d in letters:
        assert d.headers["meetnet.detail"]

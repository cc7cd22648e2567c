"""Alert records: their JSON schema (pure) and the round trip through the real broker."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from meetnet.settings import Settings
from stream.detect.alerts import encode_alerts, publish_alerts
from tests.stream.detect.support import batch, detector, minutes, noisy, registry


def spike_transitions():
    det = detector(registry(["gent-air-001"]))
    x = noisy(300)
    x[150] += 15.0
    return det.process(batch("gent-air-001", minutes(300), x), None).transitions


def test_one_json_record_per_transition_keyed_by_sensor() -> None:
    tr = spike_transitions()
    records = encode_alerts(tr)
    assert [json.loads(v)["transition"] for _, v in records] == ["opened", "resolved"]
    key, value = records[0]
    doc = json.loads(value)
    assert key == b"gent-air-001"
    assert doc["schema"] == "meetnet.alert.v1" and doc["kind"] == "spike"
    assert doc["state"] == "open" and doc["ended_at"] is None
    assert doc["at"].endswith("Z") and doc["started_at"] == "2027-01-01T02:30:00.000000Z"
    assert doc["anomaly_id"] == "gent-air-001/pm25/spike/1798770600000000"
    resolved = json.loads(records[1][1])
    assert resolved["state"] == "resolved" and resolved["ended_at"] is not None
    assert encode_alerts(tr.clear()) == []


@pytest.mark.integration
def test_alerts_reach_the_alerts_topic(stack: Settings) -> None:
    tr = spike_transitions()

    async def scenario() -> list[tuple[bytes, dict]]:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            assert await publish_alerts(producer, stack.kafka_alerts_topic, tr) == 2
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            stack.kafka_alerts_topic, bootstrap_servers=stack.kafka_bootstrap,
            auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
        )  # fmt: skip
        await consumer.start()
        try:
            got: list[tuple[bytes, dict]] = []
            for _ in range(20):
                batch_ = await consumer.getmany(timeout_ms=500)
                got += [(r.key, json.loads(r.value)) for rs in batch_.values() for r in rs]
                if len(got) >= 2:
                    break
            return got
        finally:
            await consumer.stop()

    got = asyncio.run(scenario())
    assert [(k, d["transition"]) for k, d in got] == [
        (b"gent-air-001", "opened"),
        (b"gent-air-001", "resolved"),
    ]

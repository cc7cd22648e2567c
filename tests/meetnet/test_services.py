"""meetnet/services.py on the real engines: what `meetnet up`'s drain and the tests rely on."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from meetnet import services
from meetnet.settings import Settings

pytestmark = pytest.mark.integration


def test_consumer_lag_counts_every_record_not_committed_up_to_the_true_end(
    stack: Settings,
) -> None:
    # Batches of 4: the local broker's ListOffsets answers 37 for these 40 records (the last
    # batch's base offset + 1), which made a lag of 3 look like 0.
    async def scenario() -> list[int]:
        tps = [TopicPartition(stack.kafka_readings_topic, p) for p in (0, 1)]
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for _ in range(10):
                for tp in tps:
                    batch = producer.create_batch()
                    for i in range(4):
                        batch.append(key=None, value=b"%d" % i, timestamp=None)
                    batch.close()
                    await (await producer.send_batch(batch, tp.topic, partition=tp.partition))
        finally:
            await producer.stop()
        group = AIOKafkaConsumer(
            bootstrap_servers=stack.kafka_bootstrap,
            group_id=stack.processor_group,
            enable_auto_commit=False,
        )
        await group.start()
        group.assign(tps)
        try:
            lags = [await services.consumer_lag(stack)]
            await group.commit(
                {tps[0]: OffsetAndMetadata(40, ""), tps[1]: OffsetAndMetadata(38, "")}
            )
            lags.append(await services.consumer_lag(stack))
            await group.commit({tps[1]: OffsetAndMetadata(40, "")})
            lags.append(await services.consumer_lag(stack))
        finally:
            await group.stop()
        return lags

    assert asyncio.run(scenario()) == [80, 2, 0]

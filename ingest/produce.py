"""Keyed Kafka records, batched per partition by the caller instead of one ``send()`` each.

``AIOKafkaProducer.send()`` costs tens of microseconds per record (futures, accumulator
bookkeeping). The gateway forwards thousands of small records per flush, so it hashes each key
once (Kafka's default murmur2 partitioner, cached per sensor id: the same partition a Java or
librdkafka producer would choose), appends to one ``BatchBuilder`` per partition, and submits
whole batches with ``send_batch``. Same records, same keys, same partitions.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder


class RecordTooLarge(ValueError):
    pass


class PartitionBatcher:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self._partitions: list[int] = []
        self._cache: dict[bytes, int] = {}
        self._open: dict[int, BatchBuilder] = {}
        self._futures: list[asyncio.Future[object]] = []
        self._hash = DefaultPartitioner()

    async def start_flush(self) -> None:
        """Refresh the partition list (cached metadata) before a round of ``add``."""
        parts = sorted(await self.producer.partitions_for(self.topic))
        if parts != self._partitions:
            self._partitions = parts
            self._cache.clear()

    def partition(self, key: bytes) -> int:
        p = self._cache.get(key)
        if p is None:
            p = self._hash(key, self._partitions, self._partitions)
            if len(self._cache) < 1_000_000:
                self._cache[key] = p
        return p

    async def add(self, key: bytes, value: bytes) -> None:
        p = self.partition(key)
        batch = self._open.get(p)
        if batch is None:
            batch = self._open[p] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            await self._submit(p)
            batch = self._open[p] = self.producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise RecordTooLarge(f"a {len(value)}-byte record exceeds the producer batch size")

    async def _submit(self, p: int) -> None:
        batch = self._open.pop(p)
        batch.close()
        self._futures.append(await self.producer.send_batch(batch, self.topic, partition=p))

    def reset(self) -> None:
        """Forget unsent batches (after a failed round, which the caller retries whole)."""
        self._open.clear()
        self._futures = []

    async def flush(self) -> list[asyncio.Future[object]]:
        """Submit every open batch; return the futures of all batches since the last flush."""
        for p in list(self._open):
            await self._submit(p)
        futures, self._futures = self._futures, []
        return futures

"""The API's Kafka producer, for readings created through the API (SensorThings
``POST Observations``): the same topic, key and guarantees as the MQTT gateway's records.

Started on the first write, not with the app, so the API serves reads while Kafka is down
(``/health`` reports it); closed by the app's lifespan. Every send waits for Kafka's
``acks="all"`` acknowledgement: a caller answers 201 only for readings Kafka has.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from meetnet.settings import Settings
from meetnet.wire import MAX_RECORD_BYTES

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
START_TIMEOUT_S = 5.0


class KafkaUnavailable(RuntimeError):
    """Kafka did not acknowledge in time; nothing may be assumed stored (retrying is safe)."""


class ReadingsProducer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _get(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.settings.kafka_bootstrap,
                    acks="all",
                    linger_ms=0,
                    request_timeout_ms=int(SEND_TIMEOUT_S * 1000),
                    max_batch_size=4 * MAX_RECORD_BYTES,
                    max_request_size=16 * MAX_RECORD_BYTES,
                )
                try:
                    await asyncio.wait_for(producer.start(), START_TIMEOUT_S)
                except (KafkaError, OSError, TimeoutError) as e:
                    await producer.stop()
                    raise KafkaUnavailable(
                        f"cannot connect to Kafka: {e or type(e).__name__}"
                    ) from e
                self._producer = producer
                log.info("API Kafka producer started")
            return self._producer

    async def send(self, records: list[tuple[str, bytes]]) -> None:
        """Produce (key, value) records to the readings topic and wait for every ack."""
        producer = await self._get()
        topic = self.settings.kafka_readings_topic
        try:
            futures = [
                await producer.send(topic, value, key=key.encode()) for key, value in records
            ]
            await asyncio.wait_for(asyncio.gather(*futures), SEND_TIMEOUT_S)
        except (KafkaError, TimeoutError) as e:
            raise KafkaUnavailable(
                f"Kafka did not acknowledge the readings: {e or type(e).__name__}"
            ) from e

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

"""The processor on the real engines: failures end the process instead of hanging it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

import store
from meetnet.settings import Settings
from meetnet.wire import check_message
from stream.processor import Processor
from tests.support import register_sensors

pytestmark = pytest.mark.integration


@pytest.fixture
def schemaless_db(migrated_db: str) -> Iterator[str]:
    """A database with the registry (sensor p-1 registered) but without meetnet's readings
    tables: every write fails, and not with a retriable error."""
    name = f"meetnet_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = migrated_db.rsplit("/", 1)[0] + "/" + name
    try:
        registry_sql = Path(store.__file__).parent / "migrations" / "0002_registry.sql"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(registry_sql.read_text())
            register_sensors(conn, ["p-1"])
        yield url
    finally:
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_failing_database_write_stops_the_processor_with_the_error_instead_of_hanging(
    stack: Settings, schemaless_db: str
) -> None:
    s = stack.model_copy(
        update={"database_url": SecretStr(schemaless_db), "processor_max_records": 1}
    )

    async def scenario() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(20):  # more batches than the stages can hold
                msg = b'{"metric":"pm25","ts":%d,"value":1}' % (1_795_978_800_000 + i)
                [(sensor, _, value)] = check_message(
                    f"{s.mqtt_topic_prefix}/sensors/p-1",
                    msg,
                    prefix=s.mqtt_topic_prefix,
                    max_bytes=s.max_payload_bytes,
                    max_readings=10,
                    received_ms=0,
                ).parts
                await producer.send_and_wait(s.kafka_readings_topic, value, key=sensor.encode())
        finally:
            await producer.stop()
        await asyncio.wait_for(Processor(s).run(), timeout=60)

    with pytest.raises(psycopg.errors.UndefinedTable):
        asyncio.run(scenario())

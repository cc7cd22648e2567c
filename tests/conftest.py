"""Shared fixtures. Integration tests run on the real engines: the PostgreSQL+TimescaleDB that
`make setup` prepared (database ``meetnet_test``), and a Mosquitto and Kafka-protocol broker
started once per test session on free ports with their own state directory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from meetnet import procs, services
from meetnet.settings import Settings

TEST_DB = os.environ.get(
    "MEETNET_TEST_DATABASE_URL", "postgresql://meetnet:meetnet@127.0.0.1:5432/meetnet_test"
)


def settings_env(s: Settings) -> dict[str, str]:
    """Environment that makes a child `meetnet ...` process use the same settings as ``s``."""
    return {**s.env(), "MEETNET_MANAGE_LOCAL_SERVICES": "false"}


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    state = tmp_path_factory.mktemp("meetnet-state")
    return Settings(
        database_url=TEST_DB,  # type: ignore[arg-type]
        mqtt_url=f"mqtt://127.0.0.1:{procs.free_port()}",
        kafka_bootstrap=f"127.0.0.1:{procs.free_port()}",
        state_dir=state,
        manage_local_services=True,
        # The session's Mosquitto is anonymous (MQTT authentication has its own broker and
        # tests, tests/ingest/test_broker_auth.py); the gateway's registry checks still apply.
        mqtt_auth=False,
    )


_BROKERS: dict[str, subprocess.Popen[bytes]] = {}


@pytest.fixture(scope="session")
def brokers(base_settings: Settings) -> Iterator[Settings]:
    """A Mosquitto and a Kafka-protocol broker for the whole test session."""
    services.ensure_postgres(base_settings)
    _BROKERS["mosquitto"] = services.start_mosquitto(base_settings)
    _BROKERS["kafka"] = services.start_kafka(base_settings)
    try:
        yield base_settings
    finally:
        for p in reversed(list(_BROKERS.values())):
            procs.stop(p)
        _BROKERS.clear()


def assert_brokers_alive() -> None:
    """A broker that died makes every later integration test hang or fail obscurely: say so."""
    for name, p in _BROKERS.items():
        if p.poll() is not None:
            log = "mosquitto/mosquitto.log" if name == "mosquitto" else "logs/kafka.out"
            raise AssertionError(
                f"the test session's {name} broker exited with {p.returncode} "
                f"(see its log under the session state dir: {log})"
            )


@pytest.fixture(scope="session")
def migrated_db(base_settings: Settings) -> str:
    services.migrate_db(base_settings)
    return base_settings.dsn


# Every table a test may fill (the registry's change counter, registry_state, stays).
DATA_TABLES = (
    "anomalies",
    "detector_snapshots",
    "readings",
    "rollups_1m",
    "rollups_15m",
    "rollups_1h",
    "rollups_1d",
    "rollups_1d_local",
    "latest",
    "rollup_dirty",
    "series",
    "api_keys",
    "device_credentials",
    "sensors",
    "gateways",
    "sensor_type_metrics",
    "sensor_types",
    "municipalities",
)


@pytest.fixture
def db(migrated_db: str) -> Iterator[psycopg.Connection]:
    """A connection to the migrated test database, emptied before the test."""
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE")
        yield conn


@pytest.fixture
def stack(brokers: Settings, db: psycopg.Connection) -> Settings:
    """Settings for one test: the session's brokers, an empty database, and topics, consumer
    group and share group of its own (created), so tests never see each other's messages."""
    tag = uuid.uuid4().hex[:8]
    s = brokers.model_copy(
        update={
            "kafka_readings_topic": f"readings-{tag}",
            "kafka_deadletter_topic": f"deadletter-{tag}",
            "kafka_alerts_topic": f"alerts-{tag}",
            "processor_group": f"processor-{tag}",
            "mqtt_share_group": f"gw-{tag}",
            "mqtt_topic_prefix": f"test-{tag}/v1",
            "manage_local_services": False,
        }
    )
    assert_brokers_alive()
    asyncio.run(services.ensure_topics(s))
    return s


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent

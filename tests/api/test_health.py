"""GET /health against the real database and the session's Kafka-protocol broker."""

from __future__ import annotations

import socket
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import create_app
from api.routes.health import bootstrap_servers
from meetnet.settings import Settings

# /health bounds each check to ~2 s; allow some slack for a loaded test machine.
ANSWER_WITHIN_S = 4.0


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(settings: Settings) -> tuple[int, dict[str, str], float]:
    with TestClient(create_app(settings)) as client:
        t0 = time.monotonic()
        resp = client.get("/health")
        elapsed = time.monotonic() - t0
    return resp.status_code, resp.json(), elapsed


@pytest.mark.integration
def test_health_is_ok_when_database_and_kafka_answer(brokers: Settings, migrated_db: str) -> None:
    code, body, _ = health(brokers)
    assert code == 200, body
    assert body == {"status": "ok", "database": "ok", "kafka": "ok"}


@pytest.mark.integration
def test_health_is_503_naming_kafka_when_its_port_is_closed(
    base_settings: Settings, migrated_db: str
) -> None:
    port = closed_port()
    code, body, elapsed = health(
        base_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
    )
    assert code == 503
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["kafka"].startswith("error: ") and f"127.0.0.1:{port}" in body["kafka"]
    assert body["detail"].startswith("kafka error: ")
    assert elapsed < ANSWER_WITHIN_S


@pytest.mark.integration
def test_health_is_ok_when_one_of_several_kafka_bootstrap_servers_answers(
    brokers: Settings, migrated_db: str
) -> None:
    bootstrap = f"127.0.0.1:{closed_port()},{brokers.kafka_bootstrap}"
    code, body, _ = health(brokers.model_copy(update={"kafka_bootstrap": bootstrap}))
    assert code == 200, body


@pytest.mark.integration
def test_health_is_503_naming_the_database_when_it_is_unreachable(
    brokers: Settings,
) -> None:
    down = brokers.model_copy(
        update={"database_url": SecretStr(f"postgresql://meetnet@127.0.0.1:{closed_port()}/x")}
    )
    code, body, elapsed = health(down)
    assert code == 503
    assert body["database"].startswith("error: ")
    assert body["kafka"] == "ok"
    assert body["detail"].startswith("database error: ")
    assert elapsed < ANSWER_WITHIN_S


def test_openapi_documents_health_and_its_503(base_settings: Settings) -> None:
    spec = TestClient(create_app(base_settings)).get("/openapi.json").json()
    op = spec["paths"]["/health"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Health"
    )
    assert op["responses"]["503"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/HealthProblem"
    )


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:19092", [("127.0.0.1", 19092)]),
        ("a:1, b:2,", [("a", 1), ("b", 2)]),
        ("kafka", [("kafka", 9092)]),
        ("PLAINTEXT://kafka:9093", [("kafka", 9093)]),
        ("[::1]:9092", [("::1", 9092)]),
        ("", []),
    ],
)
def test_bootstrap_servers_are_parsed_like_kafka_clients_do(
    bootstrap: str, expected: list[tuple[str, int]]
) -> None:
    assert bootstrap_servers(bootstrap) == expected

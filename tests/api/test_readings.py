"""GET /v1/sensors/{sensor_id}/readings against the real test database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import create_app
from api.schemas import ReadingsPage
from meetnet.settings import Settings
from tests.support import register_sensors

T0 = datetime(2026, 11, 29, 19, 0, tzinfo=UTC)
URL = "/v1/sensors/{}/readings"


def add_series(db: psycopg.Connection, sensor: str, metric: str) -> int:
    # The API serves registered sensors only; their type declares the metrics seeded here.
    register_sensors(db, [sensor], metrics=[metric])
    row = db.execute(
        "INSERT INTO series (sensor_id, metric) VALUES (%s, %s) RETURNING series_id",
        (sensor, metric),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_readings(
    db: psycopg.Connection, sensor: str, metric: str, rows: list[tuple[datetime, float]]
) -> None:
    sid = db.execute(
        "SELECT series_id FROM series WHERE sensor_id = %s AND metric = %s", (sensor, metric)
    ).fetchone()
    series_id = sid[0] if sid else add_series(db, sensor, metric)
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (series_id, ts, value) VALUES (%s, %s, %s)",
            [(series_id, ts, value) for ts, value in rows],
        )


def q(ts: datetime) -> str:
    """A timestamp as a query-string value."""
    return ts.isoformat().replace("+00:00", "Z")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def client(base_settings: Settings, db: psycopg.Connection) -> Iterator[TestClient]:
    with TestClient(create_app(base_settings)) as c:
        yield c


@pytest.fixture
def offline_client(base_settings: Settings) -> TestClient:
    """The app without its lifespan (no pool): enough for requests rejected before any query."""
    return TestClient(create_app(base_settings))


def get(client: TestClient, sensor: str = "gent-air-001", **params: Any) -> Any:
    return client.get(URL.format(sensor), params=params)


def window(**params: Any) -> dict[str, Any]:
    """A window around T0 that holds every reading the tests insert."""
    return {"from": q(at(-60)), "to": q(at(24 * 60)), **params}


def seed_three_metrics(db: psycopg.Connection) -> list[tuple[str, str, float]]:
    """pm10, pm25 and temp; several share a ts, some do not. Returns the expected order."""
    add_readings(db, "gent-air-001", "pm25", [(at(0), 1.0), (at(1), 2.0), (at(2), 3.0)])
    add_readings(db, "gent-air-001", "pm10", [(at(0), 10.0), (at(2), 30.0), (at(3), 40.0)])
    add_readings(db, "gent-air-001", "temp", [(at(0), 20.5), (at(1.5), 21.0), (at(3), 21.5)])
    add_readings(db, "gent-air-002", "pm25", [(at(0), 99.0)])  # another sensor: never returned
    return [
        ("pm10", "2026-11-29T19:00:00Z", 10.0),
        ("pm25", "2026-11-29T19:00:00Z", 1.0),
        ("temp", "2026-11-29T19:00:00Z", 20.5),
        ("pm25", "2026-11-29T19:01:00Z", 2.0),
        ("temp", "2026-11-29T19:01:30Z", 21.0),
        ("pm10", "2026-11-29T19:02:00Z", 30.0),
        ("pm25", "2026-11-29T19:02:00Z", 3.0),
        ("pm10", "2026-11-29T19:03:00Z", 40.0),
        ("temp", "2026-11-29T19:03:00Z", 21.5),
    ]


def triples(body: dict[str, Any]) -> list[tuple[str, str, float]]:
    return [(r["metric"], r["ts"], r["value"]) for r in body["readings"]]


def assert_422(resp: Any, param: str, text: str) -> None:
    assert resp.status_code == 422, resp.text
    errors = resp.json()["detail"]
    assert isinstance(errors, list), "validation errors keep FastAPI's 422 shape"
    assert any(e["loc"][-1] == param and text in e["msg"] for e in errors), errors


# --- results ------------------------------------------------------------------------------
@pytest.mark.integration
def test_readings_are_ordered_by_time_then_metric(
    client: TestClient, db: psycopg.Connection
) -> None:
    expected = seed_three_metrics(db)
    resp = get(client, **window())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["sensor"] == "gent-air-001"
    assert triples(body) == expected
    assert body["next_cursor"] is None
    ReadingsPage.model_validate(body)  # the body is what /openapi.json documents


@pytest.mark.integration
def test_metric_filter_returns_only_that_metric(client: TestClient, db: psycopg.Connection) -> None:
    expected = seed_three_metrics(db)
    body = get(client, metric="pm25", **window()).json()
    assert triples(body) == [t for t in expected if t[0] == "pm25"]


@pytest.mark.integration
def test_from_is_inclusive_and_to_is_exclusive(client: TestClient, db: psycopg.Connection) -> None:
    seed_three_metrics(db)
    body = get(client, **{"from": q(at(1)), "to": q(at(3))}).json()
    assert [(m, ts) for m, ts, _ in triples(body)] == [
        ("pm25", "2026-11-29T19:01:00Z"),
        ("temp", "2026-11-29T19:01:30Z"),
        ("pm10", "2026-11-29T19:02:00Z"),
        ("pm25", "2026-11-29T19:02:00Z"),
    ]


@pytest.mark.integration
def test_default_window_is_the_last_24_hours(client: TestClient, db: psycopg.Connection) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    add_readings(
        db,
        "gent-air-001",
        "pm25",
        [
            (now - timedelta(hours=27), 0.5),
            (now - timedelta(hours=25), 1.0),
            (now - timedelta(hours=23), 2.0),
            (now - timedelta(minutes=1), 3.0),
            (now + timedelta(minutes=5), 4.0),  # in the future: after the default `to`
        ],
    )
    assert [r["value"] for r in get(client).json()["readings"]] == [2.0, 3.0]
    only_to = get(client, to=q(now - timedelta(hours=2))).json()  # from = to - 24 h
    assert [r["value"] for r in only_to["readings"]] == [1.0, 2.0]


@pytest.mark.integration
def test_timestamps_are_rfc3339_in_utc(client: TestClient, db: psycopg.Connection) -> None:
    plus2 = datetime(2026, 11, 29, 23, 0, tzinfo=timezone(timedelta(hours=2)))
    add_readings(
        db,
        "gent-air-001",
        "pm25",
        [
            (plus2, 1.0),  # stored from a +02:00 instant
            (at(120) + timedelta(milliseconds=123), 2.0),
            (at(120) + timedelta(seconds=1, microseconds=5), 3.0),
        ],
    )
    body = get(client, **window()).json()
    assert [r["ts"] for r in body["readings"]] == [
        "2026-11-29T21:00:00Z",
        "2026-11-29T21:00:00.123000Z",
        "2026-11-29T21:00:01.000005Z",
    ]


@pytest.mark.integration
def test_from_and_to_accept_offsets_and_epoch_milliseconds(
    client: TestClient, db: psycopg.Connection
) -> None:
    seed_three_metrics(db)
    ms = int(at(1).timestamp() * 1000)
    forms = [
        {"from": "2026-11-29T20:01:00+01:00", "to": "2026-11-29T14:02:00-05:00"},
        {"from": str(ms), "to": str(ms + 60_000)},
        # An unencoded '+' reaches the server as a space; it is read back as '+'.
        {"from": "2026-11-29T20:01:00 01:00", "to": "2026-11-29T20:02:00 01:00"},
    ]
    for params in forms:
        resp = get(client, **params)
        assert resp.status_code == 200, (params, resp.text)
        assert [(m, ts) for m, ts, _ in triples(resp.json())] == [
            ("pm25", "2026-11-29T19:01:00Z"),
            ("temp", "2026-11-29T19:01:30Z"),
        ], params


@pytest.mark.integration
def test_known_sensor_without_readings_in_range_is_an_empty_page(
    client: TestClient, db: psycopg.Connection
) -> None:
    seed_three_metrics(db)
    resp = get(client, **{"from": q(at(-600)), "to": q(at(-300))})
    assert resp.status_code == 200
    assert resp.json() == {"sensor": "gent-air-001", "readings": [], "next_cursor": None}


# --- pagination ---------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("limit", [1, 2, 3, 4, 8])
def test_cursor_pages_through_every_reading_exactly_once(
    client: TestClient, db: psycopg.Connection, limit: int
) -> None:
    expected = seed_three_metrics(db)
    seen: list[tuple[str, str, float]] = []
    params = window(limit=limit)
    for _ in range(len(expected) + 2):
        body = get(client, **params).json()
        assert len(body["readings"]) <= limit
        seen += triples(body)
        if body["next_cursor"] is None:
            break
        assert len(body["readings"]) == limit, "only a full page can have a next page"
        params["cursor"] = body["next_cursor"]
    assert seen == expected


@pytest.mark.integration
def test_cursor_pages_one_metric_exactly_once(client: TestClient, db: psycopg.Connection) -> None:
    expected = [t for t in seed_three_metrics(db) if t[0] == "temp"]
    first = get(client, metric="temp", limit=2, **window()).json()
    rest = get(client, metric="temp", limit=2, cursor=first["next_cursor"], **window()).json()
    assert triples(first) + triples(rest) == expected
    assert rest["next_cursor"] is None


@pytest.mark.integration
def test_page_ending_on_the_last_reading_has_no_cursor(
    client: TestClient, db: psycopg.Connection
) -> None:
    expected = seed_three_metrics(db)
    body = get(client, limit=len(expected), **window()).json()
    assert len(body["readings"]) == len(expected)
    assert body["next_cursor"] is None


@pytest.mark.integration
def test_default_limit_comes_from_the_settings(
    base_settings: Settings, db: psycopg.Connection
) -> None:
    seed_three_metrics(db)
    settings = base_settings.model_copy(update={"api_default_limit": 4})
    with TestClient(create_app(settings)) as client:
        body = get(client, **window()).json()
    assert len(body["readings"]) == 4
    assert body["next_cursor"] is not None


# --- not found ----------------------------------------------------------------------------
@pytest.mark.integration
def test_unknown_sensor_is_404_with_a_message(client: TestClient, db: psycopg.Connection) -> None:
    seed_three_metrics(db)
    resp = get(client, "gent-air-404", **window())
    assert resp.status_code == 404
    assert resp.json() == {"detail": "unknown sensor 'gent-air-404'"}


@pytest.mark.integration
def test_unknown_metric_of_a_known_sensor_is_404_naming_its_metrics(
    client: TestClient, db: psycopg.Connection
) -> None:
    seed_three_metrics(db)
    resp = get(client, metric="no2", **window())
    assert resp.status_code == 404
    assert resp.json() == {
        "detail": "sensor 'gent-air-001' has no metric 'no2' (its metrics: pm10, pm25, temp)"
    }


# --- database failures --------------------------------------------------------------------
@pytest.mark.integration
def test_statement_timeout_is_504_with_a_message(
    base_settings: Settings, db: psycopg.Connection
) -> None:
    seed_three_metrics(db)
    settings = base_settings.model_copy(update={"api_statement_timeout_ms": 200})
    with (
        TestClient(create_app(settings)) as client,
        psycopg.connect(base_settings.dsn) as locker,
    ):
        # Another transaction holds the table: the API's query waits until its timeout.
        locker.execute("LOCK TABLE series IN ACCESS EXCLUSIVE MODE")
        resp = get(client, **window())
        locker.rollback()
    assert resp.status_code == 504
    assert resp.json() == {
        "detail": "the query took longer than the statement timeout of 200 ms; "
        "ask for a shorter time range or a smaller limit"
    }


@pytest.mark.integration
def test_unreachable_database_is_503_with_a_message(base_settings: Settings) -> None:
    down = base_settings.model_copy(
        update={"database_url": SecretStr("postgresql://meetnet:meetnet@127.0.0.1:1/meetnet")}
    )
    with TestClient(create_app(down)) as client:
        resp = get(client, **window())
    assert resp.status_code == 503
    assert resp.json() == {"detail": "the database is unavailable; retry later"}


# --- rejected requests (no database needed) -------------------------------------------------
def test_naive_timestamp_is_rejected_with_a_clear_message(offline_client: TestClient) -> None:
    resp = get(offline_client, **{"from": "2026-11-29T19:00:00", "to": "2026-11-29T20:00:00Z"})
    assert_422(resp, "from", "timestamp has no UTC offset")


@pytest.mark.parametrize("bad", ["yesterday", "2026-11-29", "2026-13-01T00:00:00Z", "1.5", "-1"])
def test_unparsable_timestamp_is_rejected(offline_client: TestClient, bad: str) -> None:
    assert_422(get(offline_client, to=bad), "to", "timestamp")


def test_limit_above_the_maximum_is_rejected_naming_the_maximum(
    offline_client: TestClient, base_settings: Settings
) -> None:
    resp = get(offline_client, limit=base_settings.api_max_limit + 1)
    assert_422(resp, "limit", f"limit must be at most {base_settings.api_max_limit}")


def test_limit_below_one_is_rejected(offline_client: TestClient) -> None:
    assert_422(get(offline_client, limit=0), "limit", "greater than or equal to 1")


def test_to_not_after_from_is_rejected(offline_client: TestClient) -> None:
    same = {"from": "2026-11-29T19:00:00Z", "to": "2026-11-29T20:00:00+01:00"}
    assert_422(get(offline_client, **same), "to", "must be after `from`")
    earlier = {"from": "2026-11-29T19:00:00Z", "to": "2026-11-29T18:00:00Z"}
    assert_422(get(offline_client, **earlier), "to", "must be after `from`")


def test_range_longer_than_366_days_is_rejected(offline_client: TestClient) -> None:
    ok = get(offline_client, **{"from": "2025-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"})
    assert ok.status_code != 422, "exactly 366 days is allowed"
    resp = get(offline_client, **{"from": "2025-01-01T00:00:00Z", "to": "2026-01-02T00:00:01Z"})
    assert_422(resp, "to", "one request may span at most 366 days")


@pytest.mark.parametrize("sensor", ["Gent-Air", "-lead", "a" * 65, "gent air"])
def test_malformed_sensor_id_is_rejected(offline_client: TestClient, sensor: str) -> None:
    assert_422(get(offline_client, sensor), "sensor_id", "should match pattern")


@pytest.mark.parametrize("metric", ["PM25", "2pm", "pm-25", ""])
def test_malformed_metric_is_rejected(offline_client: TestClient, metric: str) -> None:
    assert_422(get(offline_client, metric=metric), "metric", "should match pattern")


@pytest.mark.parametrize("cursor", ["not-a-cursor!", "MS4xMjM", "eyJ0cyI6IDF9", "x" * 201])
def test_malformed_cursor_is_rejected(offline_client: TestClient, cursor: str) -> None:
    # "MS4xMjM" is base64 of "1.123" (no metric); "eyJ0cyI6IDF9" of '{"ts": 1}'.
    resp = get(offline_client, cursor=cursor)
    assert resp.status_code == 422
    assert any(e["loc"] == ["query", "cursor"] for e in resp.json()["detail"])


def test_openapi_documents_the_route_parameters_and_responses(offline_client: TestClient) -> None:
    spec = offline_client.get("/openapi.json").json()
    assert spec["info"]["title"] == "meetnet"
    op = spec["paths"]["/v1/sensors/{sensor_id}/readings"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"sensor_id", "metric", "from", "to", "limit", "cursor"}
    assert params["sensor_id"]["in"] == "path"
    assert params["sensor_id"]["schema"]["pattern"] == r"^[a-z0-9][a-z0-9_-]{0,63}$"
    assert set(op["responses"]) >= {"200", "404", "422", "503", "504"}
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/ReadingsPage")
    assert "Message" in op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
    reading = spec["components"]["schemas"]["Reading"]
    assert reading["properties"]["ts"]["format"] == "date-time"
    assert offline_client.get("/docs").status_code == 200

"""The registry routes on the real database: what they create, return and refuse, and that a
refused request writes nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from api.main import create_app
from meetnet.settings import Settings
from tests.api.conftest import AIR_TYPE, ANTWERPEN, GENT, World, sensor_body

pytestmark = pytest.mark.integration


def errors_of(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, list)
    return detail


def the_error(resp: Any, loc: list[Any], text: str) -> dict[str, Any]:
    errs = errors_of(resp)
    found = [e for e in errs if e["loc"] == loc]
    assert found, errs
    assert text in found[0]["msg"], found[0]
    return found[0]


def count(db: psycopg.Connection, table: str) -> int:
    row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


# --- municipalities and sensor types ------------------------------------------------------
def test_municipalities_are_listed_and_changed_by_admins(world: World) -> None:
    resp = world.call(
        "admin",
        "PATCH",
        f"/v1/municipalities/{GENT}",
        json={
            "centroid": {"lat": 51.0543, "lon": 3.7174},
            "boundary": {
                "type": "Polygon",
                "coordinates": [[[3.6, 51.0], [3.8, 51.0], [3.8, 51.1], [3.6, 51.0]]],
            },
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["centroid"] == {"lat": 51.0543, "lon": 3.7174}
    page = world.call("anonymous", "GET", "/v1/municipalities", params={"limit": 1}).json()
    assert [m["nis_code"] for m in page["data"]] == [ANTWERPEN]
    assert "boundary" not in page["data"][0]  # lists stay small; GET one for its boundary
    rest = world.call(
        "anonymous", "GET", "/v1/municipalities", params={"cursor": page["next_cursor"]}
    )
    assert [m["nis_code"] for m in rest.json()["data"]] == [GENT]
    one = world.call("reader", "GET", f"/v1/municipalities/{GENT}").json()
    assert one["boundary"]["type"] == "Polygon"
    assert world.call("reader", "GET", "/v1/municipalities/24062").status_code == 404


def test_bad_municipality_input_is_422_saying_what_to_change(world: World) -> None:
    post = lambda body: world.call("admin", "POST", "/v1/municipalities", json=body)  # noqa: E731
    the_error(post({"nis_code": "4402", "name": "x"}), ["body", "nis_code"], "five-digit")
    the_error(post({"nis_code": GENT, "name": "Gent"}), ["body", "nis_code"], "already exists")
    the_error(
        post({"nis_code": "24062", "name": "Leuven", "centroid": {"lat": 4.7, "lon": 250}}),
        ["body", "centroid", "lon"],
        "outside -180..180",
    )
    the_error(
        post(
            {
                "nis_code": "24062",
                "name": "Leuven",
                "boundary": {"type": "Polygon", "coordinates": [[[4.7, 50.8], [4.8, 50.9]]]},
            }
        ),
        ["body", "boundary"],
        "at least 4 positions",
    )
    assert count(world.db, "municipalities") == 2


def test_sensor_types_keep_their_metrics_and_refuse_bad_units_and_ranges(world: World) -> None:
    got = world.call("anonymous", "GET", "/v1/sensor-types/air-box").json()
    assert [(m["name"], m["unit"]) for m in got["metrics"]] == [
        ("pm25", "ug/m3"),
        ("temperature", "degC"),
    ]
    post = lambda body: world.call("admin", "POST", "/v1/sensor-types", json=body)  # noqa: E731
    water = {
        "type_id": "water-level",
        "name": "Water level",
        "metrics": [
            {"name": "water_level", "unit": "ug/m3", "min": 0, "max": 900, "interval_s": 600}
        ],
    }
    err = the_error(post(water), ["body", "metrics", 0, "unit"], "use one of: cm, m")
    assert err["type"] == "unit_not_allowed"
    water["metrics"][0].update(unit="cm", min=900, max=0)
    the_error(post(water), ["body", "metrics", 0, "max"], "`min` (900.0) must be less than `max`")
    water["metrics"][0].update(unit="furlong", min=0, max=900)
    the_error(post(water), ["body", "metrics", 0, "unit"], "unknown unit 'furlong'")
    the_error(post(AIR_TYPE), ["body", "type_id"], "already exists")
    assert count(world.db, "sensor_types") == 1
    water["metrics"][0]["unit"] = "cm"
    assert post(water).status_code == 201
    resp = world.call(
        "admin",
        "PATCH",
        "/v1/sensor-types/water-level",
        json={
            "metrics": [{"name": "water_level", "unit": "m", "min": 0, "max": 9, "interval_s": 60}]
        },
    )
    assert resp.json()["metrics"][0]["unit"] == "m"
    assert world.call("admin", "DELETE", "/v1/sensor-types/water-level").status_code == 204
    used = world.call("admin", "DELETE", "/v1/sensor-types/air-box")
    assert used.status_code == 409
    assert "used by 4 sensor(s)" in used.json()["detail"]


# --- sensors --------------------------------------------------------------------------------
def test_a_municipality_key_registers_sensors_in_its_own_municipality(world: World) -> None:
    resp = world.call(
        "gent",
        "POST",
        "/v1/sensors",
        json=sensor_body("gent-new", location={"lat": 51.05, "lon": 3.72, "height_m": 3.5}),
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["municipality"] == GENT
    assert body["visibility"] == "private"  # nothing becomes open data by accident
    assert body["location"] == {"lat": 51.05, "lon": 3.72, "height_m": 3.5}
    # An admin must say where; a municipality key cannot say elsewhere.
    the_error(
        world.call("admin", "POST", "/v1/sensors", json=sensor_body("x-1")),
        ["body", "municipality"],
        "must name the municipality",
    )
    other = world.call(
        "gent", "POST", "/v1/sensors", json=sensor_body("x-2", municipality=ANTWERPEN)
    )
    assert other.status_code == 403
    assert (
        world.call(
            "admin", "POST", "/v1/sensors", json=sensor_body("x-3", municipality=ANTWERPEN)
        ).status_code
        == 201
    )


def test_bad_sensor_input_is_422_saying_what_to_change_and_writes_nothing(world: World) -> None:
    before = count(world.db, "sensors")
    post = lambda body, who="gent": world.call(who, "POST", "/v1/sensors", json=body)  # noqa: E731
    the_error(post(sensor_body("gent-pub")), ["body", "sensor_id"], "already taken")
    the_error(post(sensor_body("antw-priv")), ["body", "sensor_id"], "already taken")
    the_error(post(sensor_body("gent-gw")), ["body", "sensor_id"], "already taken")
    the_error(post(sensor_body("Gent/1")), ["body", "sensor_id"], "no MQTT wildcards")
    the_error(post(sensor_body("a+b")), ["body", "sensor_id"], "lowercase letters")
    the_error(
        post(sensor_body("gent-9", location={"lat": 3.72, "lon": 251.05})),
        ["body", "location", "lon"],
        "outside -180..180",
    )
    the_error(
        post(sensor_body("gent-9", location={"lat": 95, "lon": 3})),
        ["body", "location", "lat"],
        "lat and lon swapped?",
    )
    the_error(post(sensor_body("gent-9", type="nope")), ["body", "type"], "unknown sensor type")
    the_error(
        post(sensor_body("gent-9", municipality="99999"), who="admin"),
        ["body", "municipality"],
        "unknown NIS code '99999'",
    )
    err = the_error(
        post(sensor_body("gent-9", owner="me")), ["body", "owner"], "unknown field 'owner'"
    )
    assert "accepted: sensor_id, municipality, type" in err["msg"]
    the_error(
        post(sensor_body("gent-9", metadata={"x": "y" * 20000})),
        ["body", "metadata"],
        "at most 16384",
    )
    the_error(
        post(sensor_body("gent-9", status="retired")),
        ["body", "status"],
        "'active' or 'maintenance'",
    )
    assert count(world.db, "sensors") == before


def test_patch_changes_only_the_given_fields_and_never_the_owner_or_id(world: World) -> None:
    patch = lambda body: world.call("gent", "PATCH", "/v1/sensors/gent-priv", json=body)  # noqa: E731
    resp = patch({"visibility": "public", "location": {"lat": 51.0, "lon": 3.7, "height_m": 2}})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["visibility"] == "public" and body["location"]["height_m"] == 2
    assert body["name"] == "gent-private-marker"  # untouched
    assert body["updated_at"] > body["created_at"]
    for field, value in (("municipality", ANTWERPEN), ("sensor_id", "stolen"), ("created_at", "x")):
        the_error(patch({field: value}), ["body", field], f"unknown field '{field}'")
    the_error(patch({"name": None}), ["body"], "`name` cannot be null")
    assert patch({"gateway_id": None}).json()["gateway_id"] is None
    assert world.row("sensors", "sensor_id", "gent-priv") is not None


def test_delete_retires_a_sensor_keeps_its_readings_and_revokes_its_credentials(
    world: World,
) -> None:
    resp = world.call("gent", "DELETE", "/v1/sensors/gent-priv")
    assert resp.status_code == 200
    assert resp.json()["status"] == "retired"
    active = world.db.execute(
        "SELECT count(*) FROM device_credentials"
        " WHERE username = 'gent-priv' AND revoked_at IS NULL"
    ).fetchone()
    assert active == (0,)
    readings = world.call(
        "gent",
        "GET",
        "/v1/sensors/gent-priv/readings",
        params={"from": "2000-01-01T00:00:00Z", "to": "2000-12-01T00:00:00Z"},
    )
    assert readings.status_code == 200
    assert world.call("gent", "DELETE", "/v1/sensors/gent-priv").status_code == 200  # idempotent
    rotate = world.call("gent", "POST", "/v1/sensors/gent-priv/credentials")
    assert rotate.status_code == 409
    assert "retired" in rotate.json()["detail"]
    listed = world.call("gent", "GET", "/v1/sensors", params={"status": "retired"}).json()
    assert [s["sensor_id"] for s in listed["data"]] == ["gent-priv"]


def test_sensor_list_filters_bbox_and_paging(world: World) -> None:
    for i, (lat, lon) in enumerate([(51.05, 3.72), (51.22, 4.40), (50.88, 4.70)]):
        body = sensor_body(f"gent-geo-{i}", location={"lat": lat, "lon": lon}, visibility="public")
        assert world.call("gent", "POST", "/v1/sensors", json=body).status_code == 201
    around_antwerp = world.call(
        "anonymous", "GET", "/v1/sensors", params={"bbox": "4.3,51.1,4.5,51.3"}
    )
    assert [s["sensor_id"] for s in around_antwerp.json()["data"]] == ["gent-geo-1"]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, "municipality": GENT}
        if cursor:
            params["cursor"] = cursor
        page = world.call("gent", "GET", "/v1/sensors", params=params).json()
        assert len(page["data"]) <= 2
        seen += [s["sensor_id"] for s in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(["gent-pub", "gent-priv", "gent-geo-0", "gent-geo-1", "gent-geo-2"])
    for bbox, text in (
        ("1,2,3", "four numbers"),
        ("4,51,3,52", "minimum above maximum"),
        ("4,51,500,52", "outside WGS84"),
        ("a,b,c,d", "four numbers"),
    ):
        the_error(
            world.call("anonymous", "GET", "/v1/sensors", params={"bbox": bbox}),
            ["query", "bbox"],
            text,
        )
    the_error(
        world.call("anonymous", "GET", "/v1/sensors", params={"limit": 5000}),
        ["query", "limit"],
        "at most 1000",
    )
    the_error(
        world.call("anonymous", "GET", "/v1/sensors", params={"cursor": "nope!"}),
        ["query", "cursor"],
        "malformed cursor",
    )


# --- bulk -----------------------------------------------------------------------------------
def test_bulk_json_and_csv_register_every_row(world: World) -> None:
    rows = [sensor_body(f"gent-bulk-{i:03d}", visibility="public") for i in range(50)]
    resp = world.call("gent", "POST", "/v1/sensors/bulk", json=rows)
    assert resp.status_code == 201, resp.text
    assert resp.json()["created"] == 50
    assert [s["sensor_id"] for s in resp.json()["sensors"]] == [r["sensor_id"] for r in rows]
    csv = (
        "sensor_id,type,lat,lon,height_m,name,visibility,gateway_id,metadata\n"
        'gent-csv-1,air-box,51.05,3.72,4,"Korenmarkt, west",public,gent-gw,'
        '"{""street"": ""Korenmarkt""}"\n'
        "\n"
        "gent-csv-2,air-box,51.06,3.73,,,private,,\n"
    )
    resp = world.call(
        "gent",
        "POST",
        "/v1/sensors/bulk",
        content=csv,
        headers={"Content-Type": "text/csv; charset=utf-8"},
    )
    assert resp.status_code == 201, resp.text
    first, second = resp.json()["sensors"]
    assert first["name"] == "Korenmarkt, west" and first["metadata"] == {"street": "Korenmarkt"}
    assert first["gateway_id"] == "gent-gw" and first["location"]["height_m"] == 4
    assert second["visibility"] == "private" and second["location"]["height_m"] is None


def test_bulk_upload_with_one_bad_row_writes_nothing_and_lists_every_row_s_errors(
    world: World,
) -> None:
    before = world.db.execute("SELECT count(*), max(updated_at) FROM sensors").fetchone()
    rows = [sensor_body(f"gent-ok-{i}") for i in range(20)]
    rows[3]["location"] = {"lat": 151, "lon": 3.7}
    rows[7]["sensor_id"] = "gent-ok-2"  # repeated in the upload
    rows[9]["sensor_id"] = "antw-priv"  # taken (by another municipality)
    rows[12]["type"] = "nope"
    rows[15]["colour"] = "red"
    resp = world.call("gent", "POST", "/v1/sensors/bulk", json=rows)
    errs = errors_of(resp)
    assert [(e["row"], e["loc"][2:]) for e in errs] == [
        (4, ["location", "lat"]),
        (8, ["sensor_id"]),
        (10, ["sensor_id"]),
        (13, ["type"]),
        (16, ["colour"]),
    ]
    assert "first in row 3" in errs[1]["msg"]
    assert resp.json()["invalid_rows"] == 5 and resp.json()["rows"] == 20
    assert "nothing was registered" in resp.json()["message"]
    assert world.db.execute("SELECT count(*), max(updated_at) FROM sensors").fetchone() == before
    csv = (
        "sensor_id,type,lat,lon\n"
        "gent-c1,air-box,51,3.7\ngent-c2,air-box,north,3.7\ngent-c3,air-box,51\n"
    )
    resp = world.call(
        "gent", "POST", "/v1/sensors/bulk", content=csv, headers={"Content-Type": "text/csv"}
    )
    errs = errors_of(resp)
    assert [(e["row"], e["line"], e["loc"][2:]) for e in errs] == [(2, 3, ["lat"]), (3, 4, [])]
    assert "3 cells and the header 4" in errs[1]["msg"]
    assert world.db.execute("SELECT count(*), max(updated_at) FROM sensors").fetchone() == before


def test_bulk_limits_are_explicit(base_settings: Settings, world: World) -> None:
    small = base_settings.model_copy(update={"api_bulk_max_rows": 3, "api_bulk_max_bytes": 2048})
    with TestClient(create_app(small)) as c:
        h = world.h("gent")
        too_many = c.post(
            "/v1/sensors/bulk", json=[sensor_body(f"g-{i}") for i in range(4)], headers=h
        )
        the_error(too_many, ["body"], "at most 3 sensors")
        big = [sensor_body("g-1", name="x" * 199) for _ in range(3)]
        big[0]["metadata"] = {"k": "v" * 1900}
        too_big = c.post("/v1/sensors/bulk", json=big, headers=h)
        the_error(too_big, ["body"], "at most 2048 bytes")

        def chunks() -> Any:
            for _ in range(10):
                yield b" " * 500

        streamed = c.post(
            "/v1/sensors/bulk", content=chunks(), headers={**h, "Content-Type": "application/json"}
        )
        the_error(streamed, ["body"], "at most 2048 bytes")
        the_error(
            c.post(
                "/v1/sensors/bulk", content=b"[]", headers={**h, "Content-Type": "application/json"}
            ),
            ["body"],
            "no sensors",
        )
        the_error(
            c.post(
                "/v1/sensors/bulk", content=b"{", headers={**h, "Content-Type": "application/json"}
            ),
            ["body"],
            "not valid JSON",
        )
        the_error(
            c.post(
                "/v1/sensors/bulk", content=b"id,type\n", headers={**h, "Content-Type": "text/csv"}
            ),
            ["body"],
            "unknown column(s) 'id'",
        )
        wrong = c.post(
            "/v1/sensors/bulk", content=b"x", headers={**h, "Content-Type": "text/plain"}
        )
        assert wrong.status_code == 415
    # Ordinary bodies have their own limit (MEETNET_API_MAX_BODY_BYTES).
    huge = {
        "nis_code": "24062",
        "name": "Leuven",
        "boundary": {"type": "Polygon", "coordinates": [[[4.7, 50.8]] * 200_000]},
    }
    the_error(
        world.call("admin", "POST", "/v1/municipalities", json=huge),
        ["body"],
        "at most 1048576 bytes",
    )
    assert count(world.db, "sensors") == 4


# --- gateways and credentials ---------------------------------------------------------------
def test_gateways_and_their_credentials(world: World) -> None:
    the_error(
        world.call("gent", "POST", "/v1/gateways", json={"gateway_id": "gent-pub"}),
        ["body", "gateway_id"],
        "already taken",
    )
    resp = world.call("gent", "POST", "/v1/gateways/gent-gw/credentials")
    assert resp.status_code == 201
    body = resp.json()
    assert body["username"] == "gent-gw" and body["topic"] == "meetnet/v1/gateways/gent-gw"
    assert resp.headers["cache-control"] == "no-store"
    stored = world.db.execute(
        "SELECT password_hash FROM device_credentials WHERE credential_id = %s",
        (body["credential_id"],),
    ).fetchone()
    assert stored is not None and stored[0].startswith("$7$101$")
    assert body["password"] not in stored[0]
    rotated = world.call("gent", "POST", "/v1/gateways/gent-gw/credentials").json()
    listed = world.call("gent", "GET", "/v1/gateways/gent-gw/credentials").json()
    assert [(c["credential_id"], c["revoked_at"] is None) for c in listed] == [
        (rotated["credential_id"], True),
        (body["credential_id"], False),
    ]
    assert "password" not in str(listed)
    assert world.call("gent", "DELETE", "/v1/gateways/gent-gw/credentials").status_code == 204
    retired = world.call("gent", "DELETE", "/v1/gateways/gent-gw").json()
    assert retired["status"] == "retired"
    # A retired gateway takes no new sensors.
    resp = world.call(
        "gent", "POST", "/v1/sensors", json=sensor_body("gent-late", gateway_id="gent-gw")
    )
    the_error(resp, ["body", "gateway_id"], "no active gateway 'gent-gw'")


def test_rotating_credentials_revokes_the_previous_one(world: World) -> None:
    first = world.call("gent", "POST", "/v1/sensors/gent-pub/credentials").json()
    second = world.call("gent", "POST", "/v1/sensors/gent-pub/credentials").json()
    assert first["password"] != second["password"]
    rows = world.db.execute(
        "SELECT credential_id, revoked_at IS NULL FROM device_credentials"
        " WHERE username = 'gent-pub' ORDER BY 1"
    ).fetchall()
    assert [active for _, active in rows] == [False, False, True]
    assert world.call("admin", "POST", "/v1/sensors/gent-pub/credentials").status_code == 201


# --- readings route -------------------------------------------------------------------------
def test_readings_of_an_unregistered_sensor_are_404_even_when_stored(
    client: TestClient, db: psycopg.Connection
) -> None:
    db.execute("INSERT INTO series (sensor_id, metric) VALUES ('ghost-1', 'pm25')")
    resp = client.get("/v1/sensors/ghost-1/readings")
    assert resp.status_code == 404
    assert resp.json() == {"detail": "unknown sensor 'ghost-1'"}


def test_a_registered_sensor_without_data_has_an_empty_page(world: World) -> None:
    assert (
        world.call("gent", "POST", "/v1/sensors", json=sensor_body("gent-quiet")).status_code == 201
    )
    resp = world.call(
        "gent", "GET", "/v1/sensors/gent-quiet/readings", params={"metric": "temperature"}
    )
    assert resp.status_code == 200
    assert resp.json() == {"sensor": "gent-quiet", "readings": [], "next_cursor": None}
    resp = world.call("gent", "GET", "/v1/sensors/gent-quiet/readings", params={"metric": "no2"})
    assert resp.status_code == 404
    assert resp.json() == {
        "detail": "sensor 'gent-quiet' has no metric 'no2' (its metrics: pm25, temperature)"
    }


def test_openapi_documents_bearer_auth_and_the_registry_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in (
        "/v1/municipalities",
        "/v1/sensor-types/{type_id}",
        "/v1/sensors",
        "/v1/sensors/bulk",
        "/v1/sensors/{sensor_id}",
        "/v1/sensors/{sensor_id}/credentials",
        "/v1/gateways/{gateway_id}/credentials",
        "/v1/keys/{key_id}",
    ):
        assert path in spec["paths"], path
    bulk = spec["paths"]["/v1/sensors/bulk"]["post"]["requestBody"]["content"]
    assert set(bulk) == {"application/json", "text/csv"}
    create = spec["components"]["schemas"]["SensorCreate"]
    assert create["additionalProperties"] is False
    assert "municipality" not in spec["components"]["schemas"]["SensorUpdate"]["properties"]

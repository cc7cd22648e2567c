"""Pure parts of the registry API (no database): schemas, bbox, bulk parsing, cursors, the key
cache, the body limit and the principal rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api import bulk
from api.auth import KeyCache
from api.main import create_app
from api.paging import decode_cursor, encode_cursor
from api.registry_schemas import MetricSpec, SensorCreate, SensorUpdate
from api.routes.sensors import parse_bbox
from meetnet.settings import Settings
from store.access import ADMIN, ANONYMOUS, Principal
from store.credentials import StoredKey


def errors(model: Any, data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as e:
        model.model_validate(data)
    return [(tuple(x["loc"]), x["msg"]) for x in e.value.errors()]


def test_sensor_create_takes_no_owner_timestamps_or_unknown_fields() -> None:
    base = {"sensor_id": "gent-1", "type": "air", "location": {"lat": 51, "lon": 3.7}}
    assert SensorCreate.model_validate(base).columns()["visibility"] == "private"
    for field in ("created_at", "updated_at", "owner", "type_id", "lat"):
        ((loc, msg),) = errors(SensorCreate, {**base, field: "x"})
        assert loc == (field,)
        assert msg.startswith(f"unknown field '{field}': remove it (accepted: sensor_id,")


def test_sensor_update_cannot_move_or_rename_a_sensor() -> None:
    for field in ("sensor_id", "municipality"):
        ((loc, msg),) = errors(SensorUpdate, {field: "x"})
        assert loc == (field,) and "unknown field" in msg
    assert SensorUpdate.model_validate({"gateway_id": None}).columns() == {"gateway_id": None}
    ((_, msg),) = errors(SensorUpdate, {"visibility": None})
    assert "`visibility` cannot be null" in msg


@pytest.mark.parametrize(
    ("location", "loc", "says"),
    [
        ({"lat": 91, "lon": 3}, ("location", "lat"), "outside -90..90"),
        ({"lat": 51, "lon": -181}, ("location", "lon"), "outside -180..180"),
        ({"lat": float("nan"), "lon": 3}, ("location", "lat"), "finite"),
        ({"lat": 51, "lon": 3, "height_m": 20000}, ("location", "height_m"), "-500..10000"),
        ({"lat": 51}, ("location", "lon"), "Field required"),
    ],
)
def test_invalid_coordinates_say_what_is_wrong(
    location: dict[str, Any], loc: tuple[str, ...], says: str
) -> None:
    found = errors(SensorCreate, {"sensor_id": "s", "type": "t", "location": location})
    assert any(where == loc and says in m for where, m in found), found


def test_metric_specs_check_unit_and_range() -> None:
    ok = {"name": "pm25", "unit": "ug/m3", "min": 0, "max": 1000, "interval_s": 60}
    assert MetricSpec.model_validate(ok).unit == "ug/m3"
    assert errors(MetricSpec, {**ok, "unit": "cm"}) == [
        (("unit",), "unit 'cm' does not fit metric 'pm25'; use one of: ug/m3")
    ]
    ((loc, msg),) = errors(MetricSpec, {**ok, "min": 10, "max": 10})
    assert loc == ("max",) and "must be less than `max`" in msg


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("3.6,51.0,3.8,51.1", (3.6, 51.0, 3.8, 51.1)),
        ("-180,-90,180,90", (-180.0, -90.0, 180.0, 90.0)),
        ("3.6,51.0,3.8", None),
        ("3.8,51.0,3.6,51.1", None),
        ("3.6,51.1,3.8,51.0", None),
        ("nan,1,2,3", None),
        ("3,95,4,96", None),
    ],
)
def test_bbox_parsing(text: str, ok: tuple[float, ...] | None) -> None:
    from fastapi.exceptions import RequestValidationError

    if ok is not None:
        assert parse_bbox(text) == ok
    else:
        with pytest.raises(RequestValidationError):
            parse_bbox(text)


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    from fastapi.exceptions import RequestValidationError

    token = encode_cursor("gent-air-001")
    assert decode_cursor(token, r"[a-z0-9][a-z0-9_-]{0,63}") == "gent-air-001"
    assert decode_cursor(None, r".*") is None
    for bad in ("x", encode_cursor("Bad Id"), "a2guZ2VudA"):
        with pytest.raises(RequestValidationError):
            decode_cursor(bad, r"[a-z0-9][a-z0-9_-]{0,63}")


# --- bulk parsing ---------------------------------------------------------------------------
def test_csv_rows_become_sensor_objects_with_their_lines() -> None:
    body = (
        b"\xef\xbb\xbfsensor_id,type,lat,lon,metadata,height_m\r\n"
        b'g-1,air,51.0,3.7,"{""a"": 1}",\r\n'
        b"\r\n"
        b'g-2,air,51.1,3.8,,"12.5"\r\n'
    )
    up = bulk.parse_csv(body, max_rows=10)
    assert up.lines == [2, 4]
    checked = bulk.check_rows(up)
    assert checked.errors == []
    assert [r["sensor_id"] for r in checked.valid] == ["g-1", "g-2"]
    assert checked.valid[0]["metadata"] == {"a": 1} and checked.valid[1]["height_m"] == 12.5


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "the CSV is empty"),
        (b"sensor_id,type,lat\n", "missing column(s) lon"),
        (b"sensor_id,type,lat,lon,lat\n", "repeated column(s) lat"),
        (b"sensor_id,type,lat,lon\n", "no sensors"),
        (b"sensor_id,type,lat,lon\n" + b"a,b,1,2\n" * 4, "at most 3 sensors"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_unusable_csv_uploads_are_rejected_whole(body: bytes, says: str) -> None:
    with pytest.raises(bulk.UploadRejected, match=None) as e:
        bulk.parse_csv(body, max_rows=3)
    assert says in str(e.value)


def test_json_upload_must_be_an_array_of_bounded_size() -> None:
    with pytest.raises(bulk.UploadRejected, match="JSON array"):
        bulk.parse_json(b'{"sensors": []}', 10)
    with pytest.raises(bulk.UploadRejected, match="at most 2 sensors"):
        bulk.parse_json(b"[{}, {}, {}]", 2)
    checked = bulk.check_rows(bulk.parse_json(b'[{}, {"sensor_id": "x"}]', 10))
    assert {e["row"] for e in checked.errors} == {1, 2}
    assert all(e["loc"][:2] in (["body", 0], ["body", 1]) for e in checked.errors)


def test_csv_metadata_that_is_not_an_object_is_a_row_error() -> None:
    deep = b"[" * 100_000
    for cell in (b'"[1]"', b"{not json", deep):
        up = bulk.parse_csv(b"sensor_id,type,lat,lon,metadata\ng-1,air,51,3.7," + cell + b"\n", 10)
        (err,) = bulk.check_rows(up).errors
        assert err["loc"] == ["body", 0, "metadata"] and "JSON object" in err["msg"]


def test_deeply_nested_json_is_rejected_not_a_crash() -> None:
    with pytest.raises(bulk.UploadRejected, match="nested too deeply"):
        bulk.parse_json(b"[" * 100_000 + b"]" * 100_000, 10)


# --- key cache ------------------------------------------------------------------------------
def test_key_cache_serves_hits_without_loading_and_reloads_after_the_ttl() -> None:
    now = [100.0]
    loads: list[str] = []
    key = StoredKey("abcdefgh", b"x" * 32, "reader", None, False)

    async def load(key_id: str) -> StoredKey | None:
        loads.append(key_id)
        return key if key_id == "abcdefgh" else None

    cache = KeyCache(5.0, max_entries=2, clock=lambda: now[0])

    async def scenario() -> None:
        assert await cache.get("abcdefgh", load) is key
        assert await cache.get("abcdefgh", load) is key
        assert await cache.get("unknown1", load) is None
        assert await cache.get("unknown1", load) is None  # misses are cached too
        assert loads == ["abcdefgh", "unknown1"]
        now[0] += 5.01
        await cache.get("abcdefgh", load)
        assert loads[-1] == "abcdefgh"
        cache.invalidate("abcdefgh")
        await cache.get("abcdefgh", load)
        assert loads.count("abcdefgh") == 3
        await cache.get("unknown2", load)
        await cache.get("unknown3", load)
        assert len(cache) == 2  # bounded: the oldest entries go first

    asyncio.run(scenario())


def test_principals_see_public_data_and_own_only_their_municipality() -> None:
    gent = Principal("municipality", "44021", "k")
    assert gent.owns("44021") and not gent.owns("11002")
    assert gent.sees("11002", "public") and not gent.sees("11002", "private")
    assert ADMIN.owns("11002") and ADMIN.sees("11002", "private")
    assert not ANONYMOUS.may_write and not ANONYMOUS.sees("44021", "private")
    with pytest.raises(ValueError):
        Principal("municipality")
    with pytest.raises(ValueError):
        Principal("reader", "44021")


def test_request_bodies_over_the_limit_are_refused_before_any_route_reads_them() -> None:
    settings = Settings(api_max_body_bytes=1024)  # no lifespan: no database needed
    client = TestClient(create_app(settings))
    resp = client.post(
        "/v1/municipalities", content=b"x" * 2000, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422
    (err,) = resp.json()["detail"]
    assert err["loc"] == ["body"] and "at most 1024 bytes and is 2000 bytes" in err["msg"]

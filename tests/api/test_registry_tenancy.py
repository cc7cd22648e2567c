"""Tenancy: a municipality's key never reads or changes another municipality's private data.

Every route that takes an id is tried with Gent's key on Antwerpen's objects (and the other
way round in the property test): private objects answer exactly like unknown ids (404), public
ones are readable but not writable (403), and no response carries the other municipality's
private data; lists, filters, bulk uploads, credentials and readings included.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import (
    ANTWERPEN,
    GATEWAYS,
    GENT,
    PRIVATE_MARKER,
    READING_TS,
    SENSORS,
    World,
    sensor_body,
)

pytestmark = pytest.mark.integration

FROM_TO = {
    "from": (READING_TS - timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
    "to": (READING_TS + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
}
SENSOR_ROUTES = [
    ("GET", "/v1/sensors/{}"),
    ("PATCH", "/v1/sensors/{}"),
    ("DELETE", "/v1/sensors/{}"),
    ("GET", "/v1/sensors/{}/credentials"),
    ("POST", "/v1/sensors/{}/credentials"),
    ("DELETE", "/v1/sensors/{}/credentials"),
    ("GET", "/v1/sensors/{}/readings"),
]
GATEWAY_ROUTES = [
    ("GET", "/v1/gateways/{}"),
    ("PATCH", "/v1/gateways/{}"),
    ("DELETE", "/v1/gateways/{}"),
    ("GET", "/v1/gateways/{}/credentials"),
    ("POST", "/v1/gateways/{}/credentials"),
    ("DELETE", "/v1/gateways/{}/credentials"),
]
PATCH_BODY = {"name": "changed by someone"}
ANTWERPEN_SECRETS = (PRIVATE_MARKER[ANTWERPEN], "11002.5", "antw-priv", "antw-gw")


def request(w: World, who: str, method: str, url: str) -> Any:
    kw: dict[str, Any] = {}
    if method == "PATCH":
        kw["json"] = PATCH_BODY
    if url.endswith("/readings"):
        kw["params"] = FROM_TO
    return w.call(who, method, url, **kw)


def fingerprint(w: World) -> dict[str, Any]:
    """Everything stored about Antwerpen's objects (rows of sensors, gateways, credentials)."""
    return {
        "sensors": w.db.execute(
            "SELECT * FROM sensors WHERE municipality = %s ORDER BY sensor_id", (ANTWERPEN,)
        ).fetchall(),
        "gateways": w.db.execute(
            "SELECT * FROM gateways WHERE municipality = %s ORDER BY gateway_id", (ANTWERPEN,)
        ).fetchall(),
        "credentials": w.db.execute(
            "SELECT * FROM device_credentials WHERE username LIKE 'antw-%%' ORDER BY 1"
        ).fetchall(),
    }


def test_other_municipality_s_private_sensor_is_404_on_every_route_like_an_unknown_id(
    world: World,
) -> None:
    before = fingerprint(world)
    for method, url in SENSOR_ROUTES:
        private = request(world, "gent", method, url.format("antw-priv"))
        unknown = request(world, "gent", method, url.format("antw-none"))
        assert private.status_code == 404, (method, url, private.text)
        # Byte for byte the answer for an id that does not exist (but the id itself).
        assert private.json() == {"detail": unknown.json()["detail"].replace("none", "priv")}
        for secret in ANTWERPEN_SECRETS[:2]:
            assert secret not in private.text
    assert fingerprint(world) == before


def test_other_municipality_s_gateway_is_404_on_every_route(world: World) -> None:
    before = fingerprint(world)
    for method, url in GATEWAY_ROUTES:
        resp = request(world, "gent", method, url.format("antw-gw"))
        assert resp.status_code == 404, (method, url, resp.text)
        assert resp.json() == {"detail": "unknown gateway 'antw-gw'"}
    assert fingerprint(world) == before


def test_other_municipality_s_public_sensor_is_readable_but_not_writable(world: World) -> None:
    before = fingerprint(world)
    assert world.call("gent", "GET", "/v1/sensors/antw-pub").status_code == 200
    readings = world.call("gent", "GET", "/v1/sensors/antw-pub/readings", params=FROM_TO)
    assert readings.status_code == 200
    assert [r["value"] for r in readings.json()["readings"]] == [11002.25]
    for method, url in SENSOR_ROUTES:
        if method == "GET" and not url.endswith("/credentials"):
            continue
        resp = request(world, "gent", method, url.format("antw-pub"))
        assert resp.status_code == 403, (method, url, resp.text)
        assert "belongs to municipality 11002" in resp.json()["detail"]
        assert "password" not in resp.text
    assert fingerprint(world) == before


def test_lists_and_filters_never_show_another_municipality_s_private_sensors(
    world: World,
) -> None:
    filters: list[dict[str, str]] = [
        {},
        {"municipality": ANTWERPEN},
        {"visibility": "private"},
        {"municipality": ANTWERPEN, "visibility": "private"},
        {"type": "air-box"},
        {"status": "active"},
        {"bbox": "-180,-90,180,90"},
        {"limit": "1"},
    ]
    for params in filters:
        ids: list[str] = []
        cursor = None
        while True:
            page = world.call(
                "gent",
                "GET",
                "/v1/sensors",
                params={**params, **({"cursor": cursor} if cursor else {})},
            )
            assert page.status_code == 200, page.text
            for secret in ANTWERPEN_SECRETS[:2]:
                assert secret not in page.text, params
            ids += [s["sensor_id"] for s in page.json()["data"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert "antw-priv" not in ids, params
        expected = {
            sid
            for sid, (nis, vis) in SENSORS.items()
            if (vis == "public" or nis == GENT)
            and params.get("municipality", nis) == nis
            and params.get("visibility", vis) == vis
        }
        assert set(ids) == expected, params
    # Gateways are never public: Gent sees its own only, whatever the filter.
    for params in ({}, {"municipality": ANTWERPEN}):
        resp = world.call("gent", "GET", "/v1/gateways", params=params)
        assert [g["gateway_id"] for g in resp.json()["data"]] == (["gent-gw"] if not params else [])


def test_readers_and_anonymous_callers_see_public_data_only(world: World) -> None:
    for who in ("reader", "anonymous"):
        ids = [s["sensor_id"] for s in world.call(who, "GET", "/v1/sensors").json()["data"]]
        assert ids == ["antw-pub", "gent-pub"]
        for sid in ("antw-priv", "gent-priv"):
            assert world.call(who, "GET", f"/v1/sensors/{sid}").status_code == 404
            resp = world.call(who, "GET", f"/v1/sensors/{sid}/readings", params=FROM_TO)
            assert resp.status_code == 404
        assert world.call(who, "GET", "/v1/gateways").status_code == (
            401 if who == "anonymous" else 403
        )


def test_bulk_upload_cannot_register_into_another_municipality(world: World) -> None:
    before = world.db.execute("SELECT count(*) FROM sensors").fetchone()
    rows = [sensor_body("gent-new-1"), sensor_body("antw-new-1", municipality=ANTWERPEN)]
    resp = world.call("gent", "POST", "/v1/sensors/bulk", json=rows)
    assert resp.status_code == 403
    assert "rows 2" in resp.json()["detail"]
    csv = "sensor_id,type,lat,lon,municipality\nantw-new-2,air-box,51.2,4.4,11002\n"
    resp = world.call(
        "gent", "POST", "/v1/sensors/bulk", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert resp.status_code == 403
    assert world.db.execute("SELECT count(*) FROM sensors").fetchone() == before


def test_another_municipality_s_gateway_is_unknown_when_attaching_a_sensor(world: World) -> None:
    """Naming B's gateway gives the same message as naming a gateway that does not exist."""

    def message(gw: str, sid: str) -> str:
        resp = world.call("gent", "POST", "/v1/sensors", json=sensor_body(sid, gateway_id=gw))
        assert resp.status_code == 422, resp.text
        (err,) = resp.json()["detail"]
        assert err["loc"] == ["body", "gateway_id"]
        return str(err["msg"])

    assert message("antw-gw", "gent-x1") == message("nowhere-gw", "gent-x1").replace(
        "nowhere-gw", "antw-gw"
    )
    patched = world.call("gent", "PATCH", "/v1/sensors/gent-pub", json={"gateway_id": "antw-gw"})
    assert patched.status_code == 422
    assert "no active gateway 'antw-gw' in municipality 44021" in patched.text


def test_municipality_keys_cannot_do_admin_work(world: World) -> None:
    for method, url, body in (
        ("POST", "/v1/municipalities", {"nis_code": "24062", "name": "Leuven"}),
        ("PATCH", f"/v1/municipalities/{ANTWERPEN}", {"name": "Gent-Noord"}),
        ("POST", "/v1/sensor-types", {"type_id": "x", "name": "x", "metrics": []}),
        ("PATCH", "/v1/sensor-types/air-box", {"name": "mine now"}),
        ("DELETE", "/v1/sensor-types/air-box", None),
        ("POST", "/v1/keys", {"role": "admin"}),
        ("GET", "/v1/keys", None),
    ):
        resp = world.call("gent", method, url, json=body)
        assert resp.status_code == 403, (method, url, resp.text)
        assert resp.json() == {"detail": "only an admin key may do this"}
    key_id = world.keys["antwerpen"].split("_")[1]
    for method in ("GET", "DELETE"):
        assert world.call("gent", method, f"/v1/keys/{key_id}").status_code == 403
    assert world.call("antwerpen", "GET", "/v1/me").json()["role"] == "municipality"


# --- property: random callers, targets and routes -------------------------------------------
CALLERS = ("admin", "gent", "antwerpen", "reader", "anonymous")
OWNER_KEY = {GENT: "gent", ANTWERPEN: "antwerpen"}
TARGETS = [*SENSORS, "nobody-sensor"]


def expected_sensor_status(who: str, sid: str, method: str, url: str, retired: bool) -> set[int]:
    owner, vis = SENSORS.get(sid, (None, None))
    reads = method == "GET" and not url.endswith("/credentials")
    visible = owner is not None and (vis == "public" or who == "admin" or OWNER_KEY[owner] == who)
    if reads:
        return {200} if visible else {404}
    if who == "anonymous":
        return {401}
    if who == "reader":
        return {403}
    if not visible:
        return {404}
    if who != "admin" and OWNER_KEY[owner] != who:  # type: ignore[index]
        return {403}
    if method == "POST" and retired:
        return {409}
    return {200, 201, 204}


def expected_gateway_status(who: str, gw: str, method: str, retired: bool) -> set[int]:
    owner = GATEWAYS.get(gw)
    if who == "anonymous":
        return {401}
    if who == "reader":
        return {403}
    if owner is None or (who != "admin" and OWNER_KEY[owner] != who):
        return {404}
    if method == "POST" and retired:
        return {409}
    return {200, 201, 204}


def private_markers_hidden_from(who: str) -> list[str]:
    """Private data the caller must never receive."""
    return [
        marker for nis, marker in PRIVATE_MARKER.items() if who not in ("admin", OWNER_KEY[nis])
    ] + [f"{nis}.5" for nis in PRIVATE_MARKER if who not in ("admin", OWNER_KEY[nis])]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_property_no_caller_ever_gets_or_changes_data_it_may_not(
    world: World, data: st.DataObject
) -> None:
    who = data.draw(st.sampled_from(CALLERS), label="caller")
    on_gateway = data.draw(st.booleans(), label="gateway route")
    if on_gateway:
        target = data.draw(st.sampled_from([*GATEWAYS, "nobody-gw"]), label="gateway")
        method, url = data.draw(st.sampled_from(GATEWAY_ROUTES), label="route")
        owner = GATEWAYS.get(target)
        retired = bool(
            world.db.execute(
                "SELECT 1 FROM gateways WHERE gateway_id = %s AND status = 'retired'", (target,)
            ).fetchone()
        )
        expected = expected_gateway_status(who, target, method, retired)
    else:
        target = data.draw(st.sampled_from(TARGETS), label="sensor")
        method, url = data.draw(st.sampled_from(SENSOR_ROUTES), label="route")
        owner = SENSORS.get(target, (None, None))[0]
        retired = bool(
            world.db.execute(
                "SELECT 1 FROM sensors WHERE sensor_id = %s AND status = 'retired'", (target,)
            ).fetchone()
        )
        expected = expected_sensor_status(who, target, method, url, retired)
    may_change = who == "admin" or (owner is not None and OWNER_KEY[owner] == who)
    before = world.row(
        "sensors" if not on_gateway else "gateways",
        "sensor_id" if not on_gateway else "gateway_id",
        target,
    )
    creds_before = world.db.execute(
        "SELECT * FROM device_credentials WHERE username = %s ORDER BY 1", (target,)
    ).fetchall()

    resp = request(world, who, method, url.format(target))

    assert resp.status_code in expected, (who, method, url, target, resp.text)
    for marker in private_markers_hidden_from(who):
        assert marker not in resp.text, (who, method, url, target)
    if "password" in resp.text:
        assert may_change and method == "POST" and resp.status_code == 201
    if not may_change:
        after = world.row(
            "sensors" if not on_gateway else "gateways",
            "sensor_id" if not on_gateway else "gateway_id",
            target,
        )
        assert after == before
        assert (
            world.db.execute(
                "SELECT * FROM device_credentials WHERE username = %s ORDER BY 1", (target,)
            ).fetchall()
            == creds_before
        )

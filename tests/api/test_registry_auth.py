"""API keys: Bearer parsing, 401/403, anonymous reads, the key cache and revocation, and
secrets that never appear in a log or in any response but the one that created them."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from meetnet.admin import create_key
from meetnet.settings import Settings
from tests.api.conftest import GENT, World, bearer, build_world, sensor_body

pytestmark = pytest.mark.integration


def test_missing_malformed_wrong_and_revoked_keys_are_401_with_a_bearer_challenge(
    world: World,
) -> None:
    gent = world.keys["gent"]
    key_id = gent.split("_")[1]
    wrong_secret = f"mnk_{key_id}_{'A' * 43}"
    for header, text in (
        ("Basic dXNlcjpwdw==", "expected `Bearer <key>`"),
        ("Bearer", "expected `Bearer <key>`"),
        ("Bearer not-a-key", "malformed API key"),
        (f"Bearer {wrong_secret}", "unknown or revoked"),
        (f"Bearer mnk_{'0' * 12}_{'A' * 43}", "unknown or revoked"),
    ):
        resp = world.client.get("/v1/sensors", headers={"Authorization": header})
        assert resp.status_code == 401, header
        assert text in resp.json()["detail"]
        assert resp.headers["www-authenticate"].startswith('Bearer realm="meetnet"')
        assert wrong_secret not in resp.text
    assert world.client.get("/v1/sensors", headers=bearer(gent)).status_code == 200
    revoked = world.call("admin", "DELETE", f"/v1/keys/{key_id}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    # At once in the process that revoked it (its cache entry is dropped).
    resp = world.client.get("/v1/sensors", headers=bearer(gent))
    assert resp.status_code == 401
    assert "unknown or revoked" in resp.json()["detail"]


def test_roles_get_403_and_anonymous_writers_401(world: World) -> None:
    resp = world.call("reader", "POST", "/v1/sensors", json=sensor_body("r-1"))
    assert resp.status_code == 403
    assert "reader key only reads public data" in resp.json()["detail"]
    resp = world.call("anonymous", "POST", "/v1/sensors", json=sensor_body("r-1"))
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Bearer realm="meetnet"'
    assert world.call("anonymous", "GET", "/v1/keys").status_code == 401
    assert world.call("anonymous", "GET", "/v1/me").json() == {
        "role": "reader",
        "municipality": None,
        "key_id": None,
    }


def test_anonymous_reads_can_be_switched_off(
    base_settings: Settings, db: psycopg.Connection
) -> None:
    closed = base_settings.model_copy(update={"api_anonymous_read": False})
    with TestClient(create_app(closed)) as client:
        w = build_world(client, db, closed)
        for url in ("/v1/sensors", "/v1/municipalities", "/v1/sensors/gent-pub/readings"):
            resp = client.get(url)
            assert resp.status_code == 401, url
            assert "this API needs a key" in resp.json()["detail"]
        assert client.get("/v1/sensors", headers=w.h("reader")).status_code == 200
        assert client.get("/health").status_code in (200, 503)  # never behind a key


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_ttl(
    base_settings: Settings, db: psycopg.Connection
) -> None:
    """Another API worker revoked it (here: straight in the database): this worker keeps
    trusting its cached entry for at most MEETNET_API_KEY_CACHE_S seconds."""
    ttl = 0.5
    fast = base_settings.model_copy(update={"api_key_cache_s": ttl})
    row, key = create_key(fast, "reader", None, "ttl test")
    with TestClient(create_app(fast)) as client:
        assert client.get("/v1/me", headers=bearer(key)).status_code == 200
        db.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = %s", (row["key_id"],))
        revoked_at = time.monotonic()
        while client.get("/v1/me", headers=bearer(key)).status_code == 200:
            assert time.monotonic() - revoked_at < ttl + 1.0, "revoked key still accepted"
            time.sleep(0.05)
    assert time.monotonic() - revoked_at <= ttl + 1.0


def test_keys_are_listed_without_secrets_and_municipality_keys_need_a_known_nis_code(
    world: World,
) -> None:
    listed = world.call("admin", "GET", "/v1/keys").json()["data"]
    assert {k["role"] for k in listed} == {"admin", "municipality", "reader"}
    for key in world.keys.values():
        assert key not in str(listed)
        assert key.split("_", 2)[2] not in str(listed)
    bad = world.call("admin", "POST", "/v1/keys", json={"role": "municipality"})
    assert bad.status_code == 422 and "needs `municipality`" in bad.text
    bad = world.call(
        "admin", "POST", "/v1/keys", json={"role": "municipality", "municipality": "99999"}
    )
    assert bad.status_code == 422 and "unknown NIS code '99999'" in bad.text
    bad = world.call("admin", "POST", "/v1/keys", json={"role": "reader", "municipality": GENT})
    assert bad.status_code == 422 and "leave `municipality` out" in bad.text
    bad = world.call("admin", "POST", "/v1/keys", json={"role": "root"})
    assert bad.status_code == 422
    assert world.db.execute("SELECT count(*) FROM api_keys").fetchone() == (4,)


def test_secrets_never_appear_in_logs_or_later_responses(
    base_settings: Settings, db: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A full flow (keys, sensors, gateways, credentials created, rotated, revoked; failed
    logins) with every logger at DEBUG: no key, password or Authorization header value is
    logged, stored in clear, or returned other than once, by the request that created it."""
    caplog.set_level(logging.DEBUG)
    responses: list[tuple[str, Any]] = []
    secrets: dict[str, str] = {}  # secret -> the one response allowed to show it

    def call(w: World, who: str, method: str, url: str, **kw: Any) -> Any:
        resp = w.call(who, method, url, **kw)
        responses.append((f"{method} {url}", resp))
        return resp

    with TestClient(create_app(base_settings)) as client:
        w = build_world(client, db, base_settings)
        for who, key in w.keys.items():
            secrets[key] = f"key {who}"
        for pw in w.passwords:
            secrets[pw] = "sensor credential"
        r = call(
            w, "admin", "POST", "/v1/keys", json={"role": "municipality", "municipality": GENT}
        )
        secrets[r.json()["key"]] = "POST /v1/keys"
        allowed = {id(r)}
        for url in ("/v1/sensors/gent-pub/credentials", "/v1/gateways/gent-gw/credentials"):
            for _ in range(2):
                r = call(w, "gent", "POST", url)
                secrets[r.json()["password"]] = url
                allowed.add(id(r))
            call(w, "gent", "GET", url)
            call(w, "gent", "DELETE", url)
        key_id = w.keys["antwerpen"].split("_")[1]
        call(w, "admin", "GET", "/v1/keys", params={"include_revoked": True})
        call(w, "admin", "GET", f"/v1/keys/{key_id}")
        call(w, "admin", "DELETE", f"/v1/keys/{key_id}")
        call(w, "antwerpen", "GET", "/v1/me")  # revoked now: 401
        call(w, "gent", "GET", "/v1/me")
        w.client.get("/v1/me", headers={"Authorization": f"Bearer mnk_{key_id}_{'x' * 43}"})
        call(w, "gent", "GET", "/v1/sensors")
        call(w, "gent", "PATCH", "/v1/sensors/gent-pub", json={"name": "x", "password": "p"})

    assert len(caplog.records) > 20, "the flow should have logged (DEBUG)"
    logged = caplog.text + "".join(str(r.args) + str(r.__dict__) for r in caplog.records)
    stored = str(db.execute("SELECT * FROM api_keys").fetchall()) + str(
        db.execute("SELECT * FROM device_credentials").fetchall()
    )
    for secret, origin in secrets.items():
        secret_part = secret.split("_", 2)[2] if secret.startswith("mnk_") else secret
        assert secret_part not in logged, f"a secret ({origin}) was logged"
        assert secret_part not in stored, f"a secret ({origin}) is stored in clear"
        for what, resp in responses:
            if id(resp) not in allowed:
                assert secret_part not in resp.text, f"{what} returned a secret ({origin})"
                assert secret_part not in str(resp.headers), what
    assert "x" * 43 not in logged
    assert "Bearer" not in logged

"""store/registry.py, store/credentials.py and store/access.py on the real database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from meetnet.secrets import mosquitto_verify
from store import credentials, registry
from store.access import ADMIN, ANONYMOUS, Forbidden, Invalid, NotFound, Principal, visible_sensors
from tests.support import register_sensors

pytestmark = pytest.mark.integration
T = TypeVar("T")

GENT = Principal("municipality", "44021", "gentkey01")
ANTWERPEN = Principal("municipality", "11002", "antwkey01")
READER = Principal("reader", None, "readkey01")


def run(dsn: str, fn: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    """``fn(conn)`` in one read-write transaction, committed when it returns."""

    async def go() -> T:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        async with conn, conn.transaction():
            return await fn(conn)

    return asyncio.run(go())


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    register_sensors(db, ["g-pub"], municipality="44021", visibility="public", gateway="g-gw")
    register_sensors(db, ["g-priv"], municipality="44021", visibility="private")
    register_sensors(db, ["a-pub"], municipality="11002", visibility="public", gateway="a-gw")
    register_sensors(db, ["a-priv"], municipality="11002", visibility="private")
    return db


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        (ADMIN, ["a-priv", "a-pub", "g-priv", "g-pub"]),
        (GENT, ["a-pub", "g-priv", "g-pub"]),
        (ANTWERPEN, ["a-priv", "a-pub", "g-pub"]),
        (READER, ["a-pub", "g-pub"]),
        (ANONYMOUS, ["a-pub", "g-pub"]),
    ],
)
def test_visible_sensors_is_the_one_rule_for_every_principal(
    world: psycopg.Connection, principal: Principal, expected: list[str]
) -> None:
    cond, params = visible_sensors(principal, "x")
    query = sql.SQL("SELECT x.sensor_id FROM sensors x WHERE {} ORDER BY 1").format(cond)
    assert [r[0] for r in world.execute(query, params).fetchall()] == expected


def test_get_sensor_hides_what_the_caller_may_not_see_and_refuses_foreign_writes(
    world: psycopg.Connection, migrated_db: str
) -> None:
    with pytest.raises(NotFound, match="unknown sensor 'a-priv'"):
        run(migrated_db, lambda c: registry.get_sensor(c, GENT, "a-priv"))
    with pytest.raises(Forbidden, match="belongs to municipality 11002"):
        run(migrated_db, lambda c: registry.update_sensor(c, GENT, "a-pub", {"name": "x"}))
    with pytest.raises(NotFound):
        run(migrated_db, lambda c: registry.get_gateway(c, GENT, "a-gw"))
    assert (
        run(migrated_db, lambda c: registry.get_gateway(c, ADMIN, "a-gw"))["municipality"]
        == "11002"
    )


def test_checks_of_new_sensors_report_every_problem_with_its_row(
    world: psycopg.Connection, migrated_db: str
) -> None:
    def row(sid: str, **kw: Any) -> dict[str, Any]:
        return {
            "sensor_id": sid,
            "type_id": "test-box",
            "gateway_id": None,
            "name": "",
            "lat": 51.0,
            "lon": 3.7,
            "height_m": None,
            "status": "active",
            "visibility": "private",
            "metadata": {},
            **kw,
        }

    rows = [
        row("n-1"),
        row("a-pub"),
        row("n-1"),
        row("n-2", type_id="zz"),
        row("n-3", gateway_id="a-gw"),
    ]
    problems = run(
        migrated_db, lambda c: registry.check_new_sensors(c, GENT, rows, [10, 11, 12, 13, 14])
    )
    assert [(p.loc, p.type) for p in problems] == [
        ((11, "sensor_id"), "duplicate"),
        ((12, "sensor_id"), "duplicate"),
        ((13, "type"), "unknown_reference"),
        ((14, "gateway_id"), "unknown_reference"),
    ]
    assert all(r["municipality"] == "44021" for r in rows)  # filled in from the key
    with pytest.raises(Forbidden, match=r"rows 1\b"):
        run(
            migrated_db,
            lambda c: registry.check_new_sensors(c, GENT, [row("n-9", municipality="11002")], [0]),
        )
    with pytest.raises(Invalid):
        run(migrated_db, lambda c: registry.create_sensor(c, GENT, row("a-priv")))


def test_concurrent_rotations_of_one_device_leave_exactly_one_active_credential(
    world: psycopg.Connection, migrated_db: str
) -> None:
    async def rotate() -> str:
        conn = await psycopg.AsyncConnection.connect(migrated_db, autocommit=True)
        async with conn, conn.transaction():
            _, password = await credentials.rotate_device_credential(conn, GENT, "sensor", "g-pub")
            await asyncio.sleep(0.05)  # hold the lock a while: the others must wait
            return password

    async def many() -> list[str]:
        return list(await asyncio.gather(*(rotate() for _ in range(5))))

    passwords = asyncio.run(many())
    rows = world.execute(
        "SELECT password_hash, revoked_at IS NULL FROM device_credentials WHERE username = 'g-pub'"
    ).fetchall()
    assert len(rows) == 5
    active = [h for h, is_active in rows if is_active]
    assert len(active) == 1
    # The active hash is that of the rotation committed last, and only that one.
    assert sum(mosquitto_verify(p, active[0]) for p in passwords) == 1


def test_retiring_a_device_revokes_its_credentials(
    world: psycopg.Connection, migrated_db: str
) -> None:
    run(migrated_db, lambda c: credentials.rotate_device_credential(c, GENT, "gateway", "g-gw"))
    run(migrated_db, lambda c: credentials.rotate_device_credential(c, GENT, "sensor", "g-priv"))
    run(migrated_db, lambda c: registry.update_gateway(c, GENT, "g-gw", {"status": "retired"}))
    run(migrated_db, lambda c: registry.retire_sensor(c, GENT, "g-priv"))
    assert world.execute(
        "SELECT count(*) FROM device_credentials WHERE revoked_at IS NULL"
    ).fetchone() == (0,)


def test_api_keys_store_only_a_hash_and_revoking_is_idempotent(
    world: psycopg.Connection, migrated_db: str
) -> None:
    row, key = run(
        migrated_db, lambda c: credentials.create_api_key(c, "municipality", "44021", "t")
    )
    stored = run(migrated_db, lambda c: credentials.lookup_api_key(c, row["key_id"]))
    assert stored is not None and not stored.revoked and stored.municipality == "44021"
    assert key.split("_", 2)[2].encode() not in stored.secret_hash
    first = run(migrated_db, lambda c: credentials.revoke_api_key(c, row["key_id"]))
    again = run(migrated_db, lambda c: credentials.revoke_api_key(c, row["key_id"]))
    assert first["revoked_at"] == again["revoked_at"] is not None
    assert run(migrated_db, lambda c: credentials.lookup_api_key(c, "nosuchkey1")) is None

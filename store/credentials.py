"""Secrets in the registry: MQTT credentials of devices and API keys of people.

Only hashes are stored (``meetnet.secrets``). A new secret is returned to the caller once, by
the function that creates it, and never read back: listings show ids and dates only.

* **Device credentials**: at most one active per device (sensor or gateway; the unique index
  ``device_credentials_active``). Rotating revokes the active one and adds a new one in the
  same transaction, after locking the device's row, so two concurrent rotations serialise
  instead of colliding. The broker learns of changes through the registry's NOTIFY (the
  Mosquitto password-file sync reads ``device_credentials``).
* **API keys**: ``mnk_<key_id>_<secret>``; the row holds the SHA-256 of the secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from meetnet.secrets import api_key_hash, mosquitto_hash, new_api_key, new_secret
from store import registry
from store.access import Conflict, Invalid, NotFound, Principal, Role

Row = dict[str, Any]
DeviceKind = Literal["sensor", "gateway"]

_CRED_COLS = sql.SQL("credential_id, username, created_at, revoked_at")


async def _rows(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def _writable_device(
    conn: psycopg.AsyncConnection,
    principal: Principal,
    kind: DeviceKind,
    device_id: str,
    *,
    lock: bool = True,
) -> Row:
    """The device row (locked: ``lock``) if ``principal`` may manage its credentials."""
    if kind == "sensor":
        return await registry.writable_sensor(conn, principal, device_id, lock=lock)
    # Gateways are visible to their owners only, so seeing one means owning it.
    return await registry.get_gateway(conn, principal, device_id, lock=lock)


async def rotate_device_credential(
    conn: psycopg.AsyncConnection, principal: Principal, kind: DeviceKind, device_id: str
) -> tuple[Row, str]:
    """Revoke the device's active credential (if any) and create a new one. Returns the new
    row and its password, which exists nowhere else: show it once."""
    device = await _writable_device(conn, principal, kind, device_id)
    if device["status"] == "retired":
        raise Conflict(
            f"{kind} {device_id!r} is retired: it gets no credentials; set its status back to "
            "active first (PATCH) if it is in service again"
        )
    await registry.revoke_device_credentials(conn, device_id)
    password = new_secret()
    column = "sensor_id" if kind == "sensor" else "gateway_id"
    rows = await _rows(
        conn,
        sql.SQL(
            "INSERT INTO device_credentials ({}, username, password_hash) VALUES (%s, %s, %s)"
            " RETURNING {}"
        ).format(sql.Identifier(column), _CRED_COLS),
        (device_id, device_id, mosquitto_hash(password)),
    )
    return rows[0], password


async def revoke_device_credential(
    conn: psycopg.AsyncConnection, principal: Principal, kind: DeviceKind, device_id: str
) -> int:
    """Revoke the device's active credential; the number revoked (0 or 1)."""
    await _writable_device(conn, principal, kind, device_id)
    return await registry.revoke_device_credentials(conn, device_id)


async def list_device_credentials(
    conn: psycopg.AsyncConnection, principal: Principal, kind: DeviceKind, device_id: str
) -> list[Row]:
    """The device's credentials, newest first, without any secret or hash."""
    await _writable_device(conn, principal, kind, device_id, lock=False)
    return await _rows(
        conn,
        sql.SQL(
            "SELECT {} FROM device_credentials WHERE username = %s"
            " ORDER BY credential_id DESC LIMIT 100"
        ).format(_CRED_COLS),
        (device_id,),
    )


# --- API keys -------------------------------------------------------------------------------
_KEY_COLS = sql.SQL("key_id, role, municipality, name, created_at, revoked_at")


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What authentication needs of an ``api_keys`` row."""

    key_id: str
    secret_hash: bytes
    role: Role
    municipality: str | None
    revoked: bool


async def create_api_key(
    conn: psycopg.AsyncConnection, role: Role, municipality: str | None, name: str
) -> tuple[Row, str]:
    """A new key; returns its row and the full key (``mnk_...``), which is not stored."""
    if (role == "municipality") != (municipality is not None):
        raise Invalid.one(
            ("municipality",),
            "a key of role 'municipality' needs `municipality` (a NIS code)"
            if role == "municipality"
            else f"a key of role {role!r} belongs to no municipality: leave `municipality` out",
            municipality,
        )
    if municipality is not None:
        known = await _rows(
            conn, "SELECT 1 FROM municipalities WHERE nis_code = %s", (municipality,)
        )
        if not known:
            raise Invalid.one(
                ("municipality",),
                f"unknown NIS code {municipality!r}: register the municipality first "
                "(POST /v1/municipalities)",
                municipality,
            )
    key_id, key = new_api_key()
    rows = await _rows(
        conn,
        sql.SQL(
            "INSERT INTO api_keys (key_id, secret_hash, role, municipality, name)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING {}"
        ).format(_KEY_COLS),
        (key_id, api_key_hash(key), role, municipality, name),
    )
    return rows[0], key


async def list_api_keys(
    conn: psycopg.AsyncConnection,
    *,
    municipality: str | None,
    include_revoked: bool,
    after: str | None,
    limit: int,
) -> list[Row]:
    return await _rows(
        conn,
        sql.SQL(
            "SELECT {} FROM api_keys"
            " WHERE (%(m)s::text IS NULL OR municipality = %(m)s)"
            " AND (%(all)s OR revoked_at IS NULL)"
            " AND (%(after)s::text IS NULL OR key_id > %(after)s)"
            " ORDER BY key_id LIMIT %(n)s"
        ).format(_KEY_COLS),
        {"m": municipality, "all": include_revoked, "after": after, "n": limit},
    )


async def get_api_key(conn: psycopg.AsyncConnection, key_id: str) -> Row:
    rows = await _rows(
        conn, sql.SQL("SELECT {} FROM api_keys WHERE key_id = %s").format(_KEY_COLS), (key_id,)
    )
    if not rows:
        raise NotFound("API key", key_id)
    return rows[0]


async def revoke_api_key(conn: psycopg.AsyncConnection, key_id: str) -> Row:
    """Mark the key revoked (idempotent: an already revoked key keeps its first date)."""
    rows = await _rows(
        conn,
        sql.SQL(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s"
            " RETURNING {}"
        ).format(_KEY_COLS),
        (key_id,),
    )
    if not rows:
        raise NotFound("API key", key_id)
    return rows[0]


async def lookup_api_key(conn: psycopg.AsyncConnection, key_id: str) -> StoredKey | None:
    cur = await conn.execute(
        "SELECT secret_hash, role, municipality, revoked_at IS NOT NULL FROM api_keys"
        " WHERE key_id = %s",
        (key_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return StoredKey(key_id, bytes(row[0]), row[1], row[2], bool(row[3]))


# --- Synchronous helpers for scripts, the simulator and tests --------------------------------
# The same rule as the API's rotation (lock the device row, revoke the active credential, add
# the new one, one transaction), without the caller's access check: for operators' scripts and
# meetnet's own simulator, which act as the platform, not as a tenant.
_LOCK_DEVICE = {
    "sensor_id": "SELECT 1 FROM sensors WHERE sensor_id = %s FOR UPDATE",
    "gateway_id": "SELECT 1 FROM gateways WHERE gateway_id = %s FOR UPDATE",
}
_REVOKE = (
    "UPDATE device_credentials SET revoked_at = now() WHERE username = %s AND revoked_at IS NULL"
)


def issue(
    conn: psycopg.Connection, *, sensor_id: str | None = None, gateway_id: str | None = None
) -> str:
    """A new MQTT password for a sensor or gateway, revoking its previous one; show it once."""
    if (sensor_id is None) == (gateway_id is None):
        raise ValueError("give exactly one of sensor_id and gateway_id")
    column, device = (
        ("sensor_id", sensor_id) if sensor_id is not None else ("gateway_id", gateway_id)
    )
    password = new_secret()
    with conn.transaction():
        if conn.execute(_LOCK_DEVICE[column], (device,)).fetchone() is None:
            raise NotFound(column.removesuffix("_id"), str(device))
        conn.execute(_REVOKE, (device,))
        conn.execute(
            sql.SQL(
                "INSERT INTO device_credentials ({}, username, password_hash) VALUES (%s, %s, %s)"
            ).format(sql.Identifier(column)),
            (device, device, mosquitto_hash(password)),
        )
    return password


def revoke(conn: psycopg.Connection, username: str) -> int:
    """Revoke the device's active credential; how many were revoked (0 or 1)."""
    with conn.transaction():
        return conn.execute(_REVOKE, (username,)).rowcount

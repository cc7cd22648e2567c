"""Device credentials (MQTT username/password) in ``device_credentials``: issue, rotate, revoke.

The username is the device id (a sensor's or a gateway's); the password is a new random secret
returned once to the caller and stored only as a Mosquitto ``$7$`` hash (meetnet/secrets.py).
Issuing revokes the device's active credential in the same transaction, so issuing again *is*
rotating. The broker learns of every change within about a second (``meetnet broker-auth``
listens for the registry's NOTIFY) and disconnects clients whose credential went away.

Synchronous and asynchronous variants share the SQL; the API uses the async ones.
"""

from __future__ import annotations

import psycopg

from meetnet.secrets import mosquitto_hash, new_secret

_REVOKE = (
    "UPDATE device_credentials SET revoked_at = now() WHERE username = %s AND revoked_at IS NULL"
)
_INSERT = (
    "INSERT INTO device_credentials (sensor_id, gateway_id, username, password_hash) "
    "VALUES (%s, %s, %s, %s)"
)


def _args(sensor_id: str | None, gateway_id: str | None) -> tuple[str, tuple[object, ...]]:
    if (sensor_id is None) == (gateway_id is None):
        raise ValueError("give exactly one of sensor_id and gateway_id")
    username = sensor_id or gateway_id
    assert username is not None
    return username, (sensor_id, gateway_id, username)


def issue(
    conn: psycopg.Connection, *, sensor_id: str | None = None, gateway_id: str | None = None
) -> str:
    """A new password for a sensor or gateway (revoking its previous one); show it once."""
    username, args = _args(sensor_id, gateway_id)
    password = new_secret()
    with conn.transaction():
        conn.execute(_REVOKE, (username,))
        conn.execute(_INSERT, (*args, mosquitto_hash(password)))
    return password


def revoke(conn: psycopg.Connection, username: str) -> int:
    """Revoke the device's active credential; returns how many were revoked (0 or 1)."""
    with conn.transaction():
        return conn.execute(_REVOKE, (username,)).rowcount


async def aissue(
    conn: psycopg.AsyncConnection, *, sensor_id: str | None = None, gateway_id: str | None = None
) -> str:
    username, args = _args(sensor_id, gateway_id)
    password = new_secret()
    async with conn.transaction():
        await conn.execute(_REVOKE, (username,))
        await conn.execute(_INSERT, (*args, mosquitto_hash(password)))
    return password


async def arevoke(conn: psycopg.AsyncConnection, username: str) -> int:
    async with conn.transaction():
        return (await conn.execute(_REVOKE, (username,))).rowcount

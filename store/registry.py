"""Registry SQL: municipalities, sensor types, sensors (one by one and in bulk) and gateways.

Asynchronous functions on a connection the caller owns. Writes expect to run inside one
read-write transaction (``api.deps.Database.write``), so a request that fails half-way leaves
nothing behind. Inputs are already validated for form (``api/registry_schemas.py``); here they
are checked against the database: references exist, ids are free, the caller owns what it
changes (``store.access``). Every refusal is a :mod:`store.access` error with a message.

Lists are paged by keyset on the primary key: ``after`` is the last key of the previous page.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from store.access import (
    Conflict,
    FieldError,
    Forbidden,
    Invalid,
    NotFound,
    Principal,
    owned_by,
    visible_sensors,
)

Row = dict[str, Any]

# Serialises creations of sensor and gateway ids, as the 0002 trigger does per row: taking it
# first makes the "id taken" checks below exact under concurrent uploads.
_DEVICE_ID_LOCK = "SELECT pg_advisory_xact_lock(hashtext('meetnet_device_ids'))"


async def _rows(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def _row(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> Row | None:
    rows = await _rows(conn, query, params)
    return rows[0] if rows else None


def _set_clause(changes: dict[str, Any], columns: dict[str, str]) -> tuple[sql.Composable, Row]:
    """``col = %(col)s, ...`` for the changed fields (whitelisted by ``columns``)."""
    parts, params = [], {}
    for name, value in changes.items():
        col = columns[name]
        parts.append(sql.SQL("{} = {}").format(sql.Identifier(col), sql.Placeholder(col)))
        params[col] = Jsonb(value) if isinstance(value, dict) else value
    return sql.SQL(", ").join(parts), params


# --- municipalities -------------------------------------------------------------------------
_MUNI_COLS = sql.SQL("nis_code, name, centroid_lat, centroid_lon, boundary, created_at, updated_at")


async def list_municipalities(
    conn: psycopg.AsyncConnection, *, after: str | None, limit: int
) -> list[Row]:
    return await _rows(
        conn,
        sql.SQL(
            "SELECT {} FROM municipalities WHERE %(after)s::text IS NULL OR nis_code > %(after)s"
            " ORDER BY nis_code LIMIT %(n)s"
        ).format(_MUNI_COLS),
        {"after": after, "n": limit},
    )


async def get_municipality(conn: psycopg.AsyncConnection, nis_code: str) -> Row:
    row = await _row(
        conn,
        sql.SQL("SELECT {} FROM municipalities WHERE nis_code = %s").format(_MUNI_COLS),
        (nis_code,),
    )
    if row is None:
        raise NotFound("municipality", nis_code)
    return row


async def create_municipality(conn: psycopg.AsyncConnection, m: Row) -> Row:
    row = await _row(
        conn,
        sql.SQL(
            "INSERT INTO municipalities (nis_code, name, centroid_lat, centroid_lon, boundary)"
            " VALUES (%(nis_code)s, %(name)s, %(centroid_lat)s, %(centroid_lon)s, %(boundary)s)"
            " ON CONFLICT DO NOTHING RETURNING {}"
        ).format(_MUNI_COLS),
        {**m, "boundary": None if m["boundary"] is None else Jsonb(m["boundary"])},
    )
    if row is None:
        raise Invalid.one(
            ("nis_code",),
            f"municipality {m['nis_code']} already exists; change it with PATCH "
            f"/v1/municipalities/{m['nis_code']}",
            m["nis_code"],
        )
    return row


_MUNI_UPDATABLE = {
    "name": "name",
    "centroid_lat": "centroid_lat",
    "centroid_lon": "centroid_lon",
    "boundary": "boundary",
}


async def update_municipality(conn: psycopg.AsyncConnection, nis_code: str, changes: Row) -> Row:
    if not changes:
        return await get_municipality(conn, nis_code)
    assignments, params = _set_clause(changes, _MUNI_UPDATABLE)
    row = await _row(
        conn,
        sql.SQL("UPDATE municipalities SET {} WHERE nis_code = %(key)s RETURNING {}").format(
            assignments, _MUNI_COLS
        ),
        {**params, "key": nis_code},
    )
    if row is None:
        raise NotFound("municipality", nis_code)
    return row


# --- sensor types ---------------------------------------------------------------------------
_TYPE_SELECT = """
SELECT t.type_id, t.name, t.description, t.created_at, t.updated_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'name', m.metric, 'unit', m.unit, 'min', m.min_value, 'max', m.max_value,
                    'interval_s', m.interval_s, 'description', m.description)
                  ORDER BY m.metric COLLATE "C")
                 FROM sensor_type_metrics m WHERE m.type_id = t.type_id), '[]') AS metrics
FROM sensor_types t
"""


async def type_metrics(conn: psycopg.AsyncConnection, type_id: str) -> list[str]:
    """The metric names a sensor type declares, in bytewise order."""
    cur = await conn.execute(
        'SELECT metric FROM sensor_type_metrics WHERE type_id = %s ORDER BY metric COLLATE "C"',
        (type_id,),
    )
    return [r[0] for r in await cur.fetchall()]


async def list_sensor_types(
    conn: psycopg.AsyncConnection, *, after: str | None, limit: int
) -> list[Row]:
    return await _rows(
        conn,
        _TYPE_SELECT + " WHERE %(after)s::text IS NULL OR t.type_id > %(after)s"
        " ORDER BY t.type_id LIMIT %(n)s",
        {"after": after, "n": limit},
    )


async def get_sensor_type(conn: psycopg.AsyncConnection, type_id: str) -> Row:
    row = await _row(conn, _TYPE_SELECT + " WHERE t.type_id = %s", (type_id,))
    if row is None:
        raise NotFound("sensor type", type_id)
    return row


async def _replace_metrics(
    conn: psycopg.AsyncConnection, type_id: str, metrics: Sequence[Row]
) -> None:
    await conn.execute("DELETE FROM sensor_type_metrics WHERE type_id = %s", (type_id,))
    await conn.execute(
        "INSERT INTO sensor_type_metrics"
        " (type_id, metric, unit, min_value, max_value, interval_s, description)"
        " SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[],"
        " %s::int[], %s::text[])",
        (
            type_id,
            [m["name"] for m in metrics],
            [m["unit"] for m in metrics],
            [m["min"] for m in metrics],
            [m["max"] for m in metrics],
            [m["interval_s"] for m in metrics],
            [m["description"] for m in metrics],
        ),
    )


async def create_sensor_type(conn: psycopg.AsyncConnection, t: Row) -> Row:
    cur = await conn.execute(
        "INSERT INTO sensor_types (type_id, name, description) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (t["type_id"], t["name"], t["description"]),
    )
    if cur.rowcount == 0:
        raise Invalid.one(
            ("type_id",),
            f"sensor type {t['type_id']!r} already exists; choose another id or change it with "
            f"PATCH /v1/sensor-types/{t['type_id']}",
            t["type_id"],
        )
    await _replace_metrics(conn, t["type_id"], t["metrics"])
    return await get_sensor_type(conn, t["type_id"])


async def update_sensor_type(conn: psycopg.AsyncConnection, type_id: str, changes: Row) -> Row:
    row = await _row(
        conn, "SELECT type_id FROM sensor_types WHERE type_id = %s FOR UPDATE", (type_id,)
    )
    if row is None:
        raise NotFound("sensor type", type_id)
    metrics = changes.pop("metrics", None)
    if changes:
        assignments, params = _set_clause(changes, {"name": "name", "description": "description"})
        await conn.execute(
            sql.SQL("UPDATE sensor_types SET {} WHERE type_id = %(key)s").format(assignments),
            {**params, "key": type_id},
        )
    if metrics is not None:
        await _replace_metrics(conn, type_id, metrics)
        await conn.execute(
            "UPDATE sensor_types SET updated_at = now() WHERE type_id = %s", (type_id,)
        )
    return await get_sensor_type(conn, type_id)


async def delete_sensor_type(conn: psycopg.AsyncConnection, type_id: str) -> None:
    await get_sensor_type(conn, type_id)
    used = await _row(conn, "SELECT count(*) AS n FROM sensors WHERE type_id = %s", (type_id,))
    if used and used["n"]:
        raise Conflict(
            f"sensor type {type_id!r} is used by {used['n']} sensor(s); retire them and move "
            "them to another type first"
        )
    await conn.execute("DELETE FROM sensor_types WHERE type_id = %s", (type_id,))


# --- sensors --------------------------------------------------------------------------------
_SENSOR_COLS = sql.SQL(
    "s.sensor_id, s.municipality, s.type_id, s.gateway_id, s.name, s.lat, s.lon, s.height_m,"
    " s.status, s.visibility, s.metadata, s.created_at, s.updated_at"
)


@dataclass(frozen=True, slots=True)
class SensorFilters:
    municipality: str | None = None
    type_id: str | None = None
    status: str | None = None
    visibility: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # minlon, minlat, maxlon, maxlat


async def list_sensors(
    conn: psycopg.AsyncConnection,
    principal: Principal,
    filters: SensorFilters,
    *,
    after: str | None,
    limit: int,
) -> list[Row]:
    """The sensors ``principal`` may see that match ``filters``, by id. A filter never widens
    what is visible: it is ANDed with the visibility rule."""
    visible, params = visible_sensors(principal, "s")
    conds: list[sql.Composable] = [visible]
    for name, col in (
        ("municipality", "municipality"),
        ("type_id", "type_id"),
        ("status", "status"),
        ("visibility", "visibility"),
    ):
        value = getattr(filters, name)
        if value is not None:
            conds.append(sql.SQL("s.{} = {}").format(sql.Identifier(col), sql.Placeholder(col)))
            params[col] = value
    if filters.bbox is not None:
        conds.append(sql.SQL("s.lon BETWEEN %(x0)s AND %(x1)s AND s.lat BETWEEN %(y0)s AND %(y1)s"))
        params.update(zip(("x0", "y0", "x1", "y1"), filters.bbox, strict=True))
    if after is not None:
        conds.append(sql.SQL("s.sensor_id > %(after)s"))
        params["after"] = after
    params["n"] = limit
    query = sql.SQL("SELECT {} FROM sensors s WHERE {} ORDER BY s.sensor_id LIMIT %(n)s").format(
        _SENSOR_COLS, sql.SQL(" AND ").join(conds)
    )
    return await _rows(conn, query, params)


async def get_sensor(
    conn: psycopg.AsyncConnection, principal: Principal, sensor_id: str, *, lock: bool = False
) -> Row:
    """The sensor if ``principal`` may see it, else :class:`NotFound` (also when it exists)."""
    visible, params = visible_sensors(principal, "s")
    query = sql.SQL("SELECT {} FROM sensors s WHERE s.sensor_id = %(id)s AND {}{}").format(
        _SENSOR_COLS, visible, sql.SQL(" FOR UPDATE") if lock else sql.SQL("")
    )
    row = await _row(conn, query, {**params, "id": sensor_id})
    if row is None:
        raise NotFound("sensor", sensor_id)
    return row


async def writable_sensor(
    conn: psycopg.AsyncConnection, principal: Principal, sensor_id: str, *, lock: bool = True
) -> Row:
    """The sensor, locked for this transaction (``lock``), if ``principal`` may change it: 404
    when it may not see it, 403 when it sees it (public) but does not own it."""
    row = await get_sensor(conn, principal, sensor_id, lock=lock)
    if not principal.owns(row["municipality"]):
        raise Forbidden(
            f"sensor {sensor_id!r} belongs to municipality {row['municipality']}; only that "
            "municipality's keys and admins may change it"
        )
    return row


def _loc(index: Sequence[int] | None, i: int, field: str) -> tuple[str | int, ...]:
    """Where an error is: ``(field,)`` for one object, ``(row, field)`` in a bulk upload."""
    return (field,) if index is None else (index[i], field)


def _resolve_municipality(
    principal: Principal, rows: Sequence[Row], index: Sequence[int] | None
) -> list[FieldError]:
    """Fill in each row's municipality from the caller's key; refuse what it may not do."""
    errors: list[FieldError] = []
    foreign: list[int] = []
    for i, r in enumerate(rows):
        if principal.role == "municipality":
            if r.get("municipality") is None:
                r["municipality"] = principal.municipality
            elif r["municipality"] != principal.municipality:
                foreign.append(i)
        elif r.get("municipality") is None:
            errors.append(
                FieldError(
                    _loc(index, i, "municipality"),
                    "an admin key must name the municipality (its NIS code, e.g. 44021)",
                    "missing",
                )
            )
    if foreign:
        where = ""
        if index is not None:
            where = f" (rows {', '.join(str(index[i] + 1) for i in foreign[:20])})"
        raise Forbidden(
            f"your key belongs to municipality {principal.municipality}: it registers only "
            f"there{where}; leave out `municipality` or set it to {principal.municipality}"
        )
    return errors


async def _check_references(
    conn: psycopg.AsyncConnection, rows: Sequence[Row], index: Sequence[int] | None
) -> list[FieldError]:
    """Municipalities, types and gateways exist (gateways active, in the sensor's municipality);
    ids are free and not repeated. One query per kind, whatever the number of rows."""
    munis = {r["municipality"] for r in rows if r.get("municipality")}
    types = {r["type_id"] for r in rows}
    gws = {r["gateway_id"] for r in rows if r.get("gateway_id")}
    ids = [r["sensor_id"] for r in rows]
    known_munis = {
        r["nis_code"]
        for r in await _rows(
            conn,
            "SELECT nis_code FROM municipalities WHERE nis_code = ANY(%s)",
            (sorted(munis),),
        )
    }
    known_types = {
        r["type_id"]
        for r in await _rows(
            conn, "SELECT type_id FROM sensor_types WHERE type_id = ANY(%s)", (sorted(types),)
        )
    }
    gateways = {
        r["gateway_id"]: r
        for r in await _rows(
            conn,
            "SELECT gateway_id, municipality, status FROM gateways WHERE gateway_id = ANY(%s)",
            (sorted(gws),),
        )
    }
    taken = {
        r["id"]
        for r in await _rows(
            conn,
            "SELECT sensor_id AS id FROM sensors WHERE sensor_id = ANY(%(ids)s) UNION ALL"
            " SELECT gateway_id FROM gateways WHERE gateway_id = ANY(%(ids)s)",
            {"ids": ids},
        )
    }
    errors: list[FieldError] = []
    first_row: dict[str, int] = {}
    for i, r in enumerate(rows):
        sid, muni = r["sensor_id"], r.get("municipality")
        if sid in first_row:
            errors.append(
                FieldError(
                    _loc(index, i, "sensor_id"),
                    f"sensor id {sid!r} appears more than once in this upload (first in row "
                    f"{first_row[sid] + 1}); each sensor needs its own id",
                    "duplicate",
                    sid,
                )
            )
        else:
            first_row[sid] = index[i] if index is not None else i
        if sid in taken:
            errors.append(
                FieldError(
                    _loc(index, i, "sensor_id"),
                    f"sensor id {sid!r} is already taken (sensor and gateway ids are unique "
                    "across all municipalities); choose another, e.g. prefixed with your "
                    "municipality's name",
                    "duplicate",
                    sid,
                )
            )
        if muni is not None and muni not in known_munis:
            errors.append(
                FieldError(
                    _loc(index, i, "municipality"),
                    f"unknown NIS code {muni!r}: use the NIS code of a registered "
                    "municipality (GET /v1/municipalities), e.g. 44021 for Gent",
                    "unknown_reference",
                    muni,
                )
            )
        if r["type_id"] not in known_types:
            errors.append(
                FieldError(
                    _loc(index, i, "type"),
                    f"unknown sensor type {r['type_id']!r}: use one of GET /v1/sensor-types, "
                    "or ask an admin to create it",
                    "unknown_reference",
                    r["type_id"],
                )
            )
        gw = r.get("gateway_id")
        if gw:
            g = gateways.get(gw)
            if g is None or g["municipality"] != muni or g["status"] != "active":
                # The same message whether it exists elsewhere or not: reveal nothing.
                errors.append(
                    FieldError(
                        _loc(index, i, "gateway_id"),
                        f"no active gateway {gw!r} in municipality {muni}: register it first "
                        "(POST /v1/gateways) or leave `gateway_id` out",
                        "unknown_reference",
                        gw,
                    )
                )
    return errors


_INSERT_SENSORS = """
INSERT INTO sensors (sensor_id, municipality, type_id, gateway_id, name, lat, lon, height_m,
                     status, visibility, metadata)
SELECT i, m, t, g, n, la, lo, h, st, v, md::jsonb
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::float8[],
            %s::float8[], %s::float8[], %s::text[], %s::text[], %s::text[])
     AS u(i, m, t, g, n, la, lo, h, st, v, md)
"""
_INSERT_COLS = (
    "sensor_id",
    "municipality",
    "type_id",
    "gateway_id",
    "name",
    "lat",
    "lon",
    "height_m",
    "status",
    "visibility",
)


async def check_new_sensors(
    conn: psycopg.AsyncConnection,
    principal: Principal,
    rows: list[Row],
    index: Sequence[int] | None = None,
) -> list[FieldError]:
    """Everything wrong with registering ``rows`` (validated ``SensorCreate`` column dicts),
    as errors located at ``index[i]`` (the row's place in an upload) or, without ``index``,
    at the field. Fills in each row's municipality from a municipality key; raises Forbidden
    for rows of another municipality. Takes the device-id lock: call it in the transaction
    that inserts."""
    errors = _resolve_municipality(principal, rows, index)
    await conn.execute(_DEVICE_ID_LOCK)
    errors += await _check_references(conn, rows, index)
    return errors


async def insert_sensors(conn: psycopg.AsyncConnection, rows: list[Row]) -> list[Row]:
    """Insert checked rows in one statement; returns them as stored, in the given order."""
    arrays: list[list[Any]] = [[r.get(c) for r in rows] for c in _INSERT_COLS]
    arrays.append([json.dumps(r["metadata"]) for r in rows])
    await conn.execute(_INSERT_SENSORS, arrays)
    created = await _rows(
        conn,
        sql.SQL("SELECT {} FROM sensors s WHERE s.sensor_id = ANY(%s)").format(_SENSOR_COLS),
        ([r["sensor_id"] for r in rows],),
    )
    order = {r["sensor_id"]: i for i, r in enumerate(rows)}
    return sorted(created, key=lambda r: order[r["sensor_id"]])


async def create_sensor(conn: psycopg.AsyncConnection, principal: Principal, row: Row) -> Row:
    errors = await check_new_sensors(conn, principal, [row])
    if errors:
        raise Invalid(errors)
    (created,) = await insert_sensors(conn, [row])
    return created


_SENSOR_UPDATABLE = {
    "name": "name",
    "type_id": "type_id",
    "gateway_id": "gateway_id",
    "lat": "lat",
    "lon": "lon",
    "height_m": "height_m",
    "status": "status",
    "visibility": "visibility",
    "metadata": "metadata",
}


async def update_sensor(
    conn: psycopg.AsyncConnection, principal: Principal, sensor_id: str, changes: Row
) -> Row:
    current = await writable_sensor(conn, principal, sensor_id)
    if not changes:
        return current
    errors: list[FieldError] = []
    if "type_id" in changes:
        t = await _row(conn, "SELECT 1 FROM sensor_types WHERE type_id = %s", (changes["type_id"],))
        if t is None:
            errors.append(
                FieldError(
                    ("type",),
                    f"unknown sensor type {changes['type_id']!r}: use one of GET /v1/sensor-types",
                    "unknown_reference",
                    changes["type_id"],
                )
            )
    if changes.get("gateway_id"):
        g = await _row(
            conn,
            "SELECT 1 FROM gateways WHERE gateway_id = %s AND municipality = %s"
            " AND status = 'active'",
            (changes["gateway_id"], current["municipality"]),
        )
        if g is None:
            errors.append(
                FieldError(
                    ("gateway_id",),
                    f"no active gateway {changes['gateway_id']!r} in municipality "
                    f"{current['municipality']}: register it first or set `gateway_id` to null",
                    "unknown_reference",
                    changes["gateway_id"],
                )
            )
    if errors:
        raise Invalid(errors)
    assignments, params = _set_clause(changes, _SENSOR_UPDATABLE)
    await conn.execute(
        sql.SQL("UPDATE sensors SET {} WHERE sensor_id = %(key)s").format(assignments),
        {**params, "key": sensor_id},
    )
    if changes.get("status") == "retired":
        await revoke_device_credentials(conn, sensor_id)
    return await get_sensor(conn, principal, sensor_id)


async def retire_sensor(conn: psycopg.AsyncConnection, principal: Principal, sensor_id: str) -> Row:
    """Status ``retired`` and its MQTT credentials revoked; its readings stay."""
    return await update_sensor(conn, principal, sensor_id, {"status": "retired"})


async def revoke_device_credentials(conn: psycopg.AsyncConnection, device_id: str) -> int:
    cur = await conn.execute(
        "UPDATE device_credentials SET revoked_at = now()"
        " WHERE username = %s AND revoked_at IS NULL",
        (device_id,),
    )
    return cur.rowcount


# --- gateways -------------------------------------------------------------------------------
_GW_COLS = sql.SQL(
    "g.gateway_id, g.municipality, g.name, g.status, g.metadata, g.created_at, g.updated_at"
)


async def list_gateways(
    conn: psycopg.AsyncConnection,
    principal: Principal,
    *,
    municipality: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[Row]:
    """Gateways are never public: a municipality sees its own, an admin all."""
    owned, params = owned_by(principal, sql.SQL("g.municipality"))
    conds: list[sql.Composable] = [owned]
    for col, value in (("municipality", municipality), ("status", status)):
        if value is not None:
            conds.append(sql.SQL("g.{} = {}").format(sql.Identifier(col), sql.Placeholder(col)))
            params[col] = value
    if after is not None:
        conds.append(sql.SQL("g.gateway_id > %(after)s"))
        params["after"] = after
    params["n"] = limit
    query = sql.SQL("SELECT {} FROM gateways g WHERE {} ORDER BY g.gateway_id LIMIT %(n)s").format(
        _GW_COLS, sql.SQL(" AND ").join(conds)
    )
    return await _rows(conn, query, params)


async def get_gateway(
    conn: psycopg.AsyncConnection, principal: Principal, gateway_id: str, *, lock: bool = False
) -> Row:
    owned, params = owned_by(principal, sql.SQL("g.municipality"))
    query = sql.SQL("SELECT {} FROM gateways g WHERE g.gateway_id = %(id)s AND {}{}").format(
        _GW_COLS, owned, sql.SQL(" FOR UPDATE") if lock else sql.SQL("")
    )
    row = await _row(conn, query, {**params, "id": gateway_id})
    if row is None:
        raise NotFound("gateway", gateway_id)
    return row


async def create_gateway(conn: psycopg.AsyncConnection, principal: Principal, g: Row) -> Row:
    errors = _resolve_municipality(principal, [g], None)
    if errors:
        raise Invalid(errors)
    await conn.execute(_DEVICE_ID_LOCK)
    muni = await _row(
        conn, "SELECT 1 FROM municipalities WHERE nis_code = %s", (g["municipality"],)
    )
    if muni is None:
        raise Invalid.one(
            ("municipality",),
            f"unknown NIS code {g['municipality']!r}: use the NIS code of a registered "
            "municipality (GET /v1/municipalities)",
            g["municipality"],
        )
    taken = await _row(
        conn,
        "SELECT 1 FROM gateways WHERE gateway_id = %(id)s"
        " UNION ALL SELECT 1 FROM sensors WHERE sensor_id = %(id)s",
        {"id": g["gateway_id"]},
    )
    if taken is not None:
        raise Invalid.one(
            ("gateway_id",),
            f"gateway id {g['gateway_id']!r} is already taken (sensor and gateway ids are "
            "unique across all municipalities); choose another",
            g["gateway_id"],
        )
    await conn.execute(
        "INSERT INTO gateways (gateway_id, municipality, name, metadata) VALUES (%s, %s, %s, %s)",
        (g["gateway_id"], g["municipality"], g["name"], Jsonb(g["metadata"])),
    )
    return await get_gateway(conn, principal, g["gateway_id"])


async def update_gateway(
    conn: psycopg.AsyncConnection, principal: Principal, gateway_id: str, changes: Row
) -> Row:
    await get_gateway(conn, principal, gateway_id, lock=True)
    if changes:
        assignments, params = _set_clause(
            changes, {"name": "name", "status": "status", "metadata": "metadata"}
        )
        await conn.execute(
            sql.SQL("UPDATE gateways SET {} WHERE gateway_id = %(key)s").format(assignments),
            {**params, "key": gateway_id},
        )
        if changes.get("status") == "retired":
            await revoke_device_credentials(conn, gateway_id)
    return await get_gateway(conn, principal, gateway_id)

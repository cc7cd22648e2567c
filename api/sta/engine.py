"""Answering SensorThings GET requests: resolve the resource path, read the entities (registry
sets here, Observations in ``api/sta/observations.py``), expand, and render the JSON with
``@iot.selfLink``, ``@iot.navigationLink``, ``@iot.count`` and ``@iot.nextLink``.

Registry sets (Things, Locations, ...) are small (one row per sensor, type or metric): they are
ordered by ``$orderby`` and then by id, and paged by ``$skip`` (their next links carry it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from api.schemas import rfc3339_utc
from api.sta import compile as c
from api.sta import ids, observations
from api.sta.errors import bad_request, not_found
from api.sta.model import DATASTREAM, ENTITY_SETS, ENTITY_TYPES, OBSERVATION, EntityType, Nav
from api.sta.paths import ParsedPath
from api.sta.query import Expand, Limits, Options, Page
from store.access import Principal

Row = dict[str, Any]


@dataclass
class Req:
    conn: psycopg.AsyncConnection
    principal: Principal
    base: str  # scheme://host[:port] (or MEETNET_API_PUBLIC_URL)
    now: datetime
    limits: Limits
    max_merge: int

    @property
    def root(self) -> str:
        return self.base + "/sta/v1.1"

    def context(self) -> c.Context:
        return c.Context(self.principal, self.base, self.now)

    def self_link(self, entity: EntityType, key: str) -> str:
        return f"{self.root}/{entity.set_name}({ids.quote(key)})"

    async def rows(self, query: sql.SQL | sql.Composed, params: dict[str, Any]) -> list[Row]:
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()


# --- targets of a resource path ------------------------------------------------------------
@dataclass
class Collection:
    entity: EntityType
    path: str  # relative to the service root, for next links
    constraint: tuple[str, Any] | None = None  # child column = value
    parent: Row | None = None  # the entity the path navigated from
    parent_entity: EntityType | None = None


@dataclass
class Single:
    entity: EntityType
    row: Row


@dataclass
class Target:
    kind: str  # collection | entity | property
    collection: Collection | None = None
    single: Single | None = None
    prop: str | None = None
    raw_value: bool = False
    ref: bool = False


def _compile_error(e: c.CompileError, option: str) -> Exception:
    return bad_request(f"{option}: {e}")


async def fetch_one(
    req: Req, entity: EntityType, key: str, constraint: tuple[str, Any] | None
) -> Row | None:
    if entity is OBSERVATION:
        return await observations.single(req, key, constraint)
    ctx = req.context()
    conds = [sql.SQL("e.id = {}").format(ctx.param(key))]
    if constraint is not None:
        conds.append(
            sql.SQL("e.{} = {}").format(sql.Identifier(constraint[0]), ctx.param(constraint[1]))
        )
    query = sql.SQL("SELECT e.* FROM ({}) e WHERE {}").format(
        ctx.source(entity.name), sql.SQL(" AND ").join(conds)
    )
    rows = await req.rows(query, ctx.params)
    return rows[0] if rows else None


def _unknown(entity: EntityType, key: str) -> Exception:
    return not_found(f"no {entity.name} with id {ids.quote(key)}")


async def resolve(req: Req, parsed: ParsedPath) -> Target:
    first = parsed.segments[0]
    entity = ENTITY_SETS.get(first.name)
    if entity is None:
        raise not_found(
            f"no entity set {first.name!r}; the entity sets are: " + ", ".join(ENTITY_SETS)
        )
    path = first.name
    if first.key is None:
        current: Collection | Single = Collection(entity, path)
    else:
        row = await fetch_one(req, entity, first.key, None)
        if row is None:
            raise _unknown(entity, first.key)
        current = Single(entity, row)
        path = f"{entity.set_name}({ids.quote(first.key)})"
    rest = parsed.segments[1:]
    for i, seg in enumerate(rest):
        if isinstance(current, Collection):
            raise bad_request(
                f"{seg.name!r} follows a collection: name one entity first, e.g. "
                f"{current.entity.set_name}('<id>')/{seg.name}"
            )
        ent, row = current.entity, current.row
        nav = ent.navs.get(seg.name)
        if nav is None:
            if seg.name in ent.props and seg.key is None and i == len(rest) - 1:
                if parsed.ref:
                    raise bad_request("$ref applies to navigation properties, not to properties")
                return Target("property", single=current, prop=seg.name, raw_value=parsed.value)
            raise not_found(
                f"{ent.name} has no property or navigation property {seg.name!r}; it has: "
                + ", ".join([*ent.props, *ent.navs])
            )
        target = ENTITY_TYPES[nav.target]
        value = row[nav.parent_col]
        if nav.many:
            constraint = (nav.child_col, value)
            if seg.key is None:
                current = Collection(target, f"{path}/{seg.name}", constraint, row, ent)
                path = current.path
                continue
            child = await fetch_one(req, target, seg.key, constraint)
            if child is None:
                raise _unknown(target, seg.key)
            current = Single(target, child)
            path = f"{target.set_name}({ids.quote(seg.key)})"
            continue
        if seg.key is not None:
            raise bad_request(f"{seg.name} is a single entity: it takes no key")
        child = await fetch_one(req, target, str(value), None) if value is not None else None
        if child is None:
            raise not_found(f"{ent.name} {ids.quote(str(row['id']))} has no {seg.name}")
        current = Single(target, child)
        path = f"{target.set_name}({ids.quote(str(child['id']))})"
    if parsed.value:
        raise bad_request("$value follows a property, e.g. Things('<id>')/name/$value")
    if isinstance(current, Collection):
        return Target("collection", collection=current, ref=parsed.ref)
    return Target("entity", single=current, ref=parsed.ref)


# --- registry collections ----------------------------------------------------------------
def _filter_sql(
    ctx: c.Context, entity: EntityType, opts: Options, alias: str = "e"
) -> sql.Composable:
    if opts.filter is None:
        return sql.SQL("TRUE")
    try:
        return c.condition(opts.filter, c.Scope(entity, alias), ctx)
    except c.CompileError as e:
        raise _compile_error(e, "$filter") from None


def _order_sql(
    ctx: c.Context, entity: EntityType, opts: Options, alias: str = "e"
) -> sql.Composable:
    try:
        terms = c.order_terms(opts.orderby, c.Scope(entity, alias), ctx)
    except c.CompileError as e:
        raise _compile_error(e, "$orderby") from None
    terms.append(sql.SQL('{}.id COLLATE "C"').format(sql.Identifier(alias)))
    return sql.SQL(", ").join(terms)


async def registry_page(
    req: Req, entity: EntityType, constraint: tuple[str, Any] | None, opts: Options
) -> Page:
    ctx = req.context()
    conds = [_filter_sql(ctx, entity, opts)]
    if constraint is not None:
        conds.append(
            sql.SQL("e.{} = {}").format(sql.Identifier(constraint[0]), ctx.param(constraint[1]))
        )
    where = sql.SQL(" AND ").join(conds)
    top = opts.effective_top
    query = sql.SQL("SELECT e.* FROM ({}) e WHERE {} ORDER BY {} LIMIT {} OFFSET {}").format(
        ctx.source(entity.name),
        where,
        _order_sql(ctx, entity, opts),
        ctx.param(top + 1),
        ctx.param(opts.skip),
    )
    rows = await req.rows(query, ctx.params)
    count = None
    if opts.count:
        cq = sql.SQL("SELECT count(*) AS n FROM ({}) e WHERE {}").format(
            ctx.source(entity.name), where
        )
        count = int((await req.rows(cq, ctx.params))[0]["n"])
    return Page(rows[:top], count, len(rows) > top)


async def registry_children(
    req: Req, target: EntityType, nav: Nav, keys: list[Any], opts: Options
) -> dict[Any, Page]:
    """The expanded collection ``nav`` of each parent key, $top/$skip applied per parent."""
    ctx = req.context()
    child = sql.Identifier(nav.child_col)
    query = sql.SQL(
        "SELECT * FROM (SELECT e.*, row_number() OVER (PARTITION BY e.{c} ORDER BY {o}) AS _rn,"
        " count(*) OVER (PARTITION BY e.{c}) AS _n FROM ({src}) e"
        " WHERE e.{c} = ANY({keys}::text[]) AND {f}) x"
        " WHERE x._rn > {skip} AND x._rn <= {end} ORDER BY x.{c}, x._rn"
    ).format(
        c=child,
        o=_order_sql(ctx, target, opts),
        src=ctx.source(target.name),
        keys=ctx.param([str(k) for k in keys]),
        f=_filter_sql(ctx, target, opts),
        skip=ctx.param(opts.skip),
        end=ctx.param(opts.skip + opts.effective_top + 1),
    )
    out: dict[Any, Page] = {str(k): Page([]) for k in keys}
    for row in await req.rows(query, ctx.params):
        page = out[str(row[nav.child_col])]
        page.count = int(row["_n"])
        if len(page.rows) < opts.effective_top:
            page.rows.append(row)
        else:
            page.more = True
    for page in out.values():
        if page.count is None:
            page.count = 0
    return out


async def registry_by_ids(req: Req, target: EntityType, keys: list[Any]) -> dict[str, Row]:
    ctx = req.context()
    query = sql.SQL("SELECT e.* FROM ({}) e WHERE e.id = ANY({}::text[])").format(
        ctx.source(target.name), ctx.param(sorted({str(k) for k in keys if k is not None}))
    )
    return {str(r["id"]): r for r in await req.rows(query, ctx.params)}


async def add_phenomenon_times(req: Req, rows: list[Row]) -> None:
    """Datastream.phenomenonTime: the first and last reading of each series (two index
    probes per Datastream), for the rows of one page only."""
    sids = [r["series_id"] for r in rows if r.get("series_id") is not None]
    times: dict[int, tuple[datetime, datetime]] = {}
    if sids:
        query = sql.SQL(
            "SELECT s AS sid,"
            " (SELECT r.ts FROM readings r WHERE r.series_id = s ORDER BY r.ts LIMIT 1) AS first,"
            " (SELECT r.ts FROM readings r WHERE r.series_id = s"
            "  ORDER BY r.ts DESC LIMIT 1) AS last"
            " FROM unnest(%(sids)s::int[]) AS s"
        )
        for r in await req.rows(query, {"sids": sids}):
            if r["first"] is not None:
                times[r["sid"]] = (r["first"], r["last"])
    for r in rows:
        t = times.get(r.get("series_id"))  # type: ignore[arg-type]
        r["phenomenonTime"] = f"{rfc3339_utc(t[0])}/{rfc3339_utc(t[1])}" if t else None


# --- rendering -----------------------------------------------------------------------------
def _value(v: Any) -> Any:
    if isinstance(v, datetime):
        return rfc3339_utc(v)
    return v


# Optional properties (OGC 18-088 Tables 10-18) meetnet leaves unset; shown only when
# $select names them.
OPTIONAL = {
    "Datastream": frozenset({"phenomenonTime", "resultTime"}),
    "Observation": frozenset({"resultQuality", "validTime", "parameters"}),
}


def render_row(req: Req, entity: EntityType, row: Row, opts: Options) -> dict[str, Any]:
    sel = set(opts.select) if opts.select is not None else None
    key = ids.observation_id(row["ds_id"], row["ts"]) if entity is OBSERVATION else str(row["id"])
    link = req.self_link(entity, key)
    out: dict[str, Any] = {}
    optional = OPTIONAL.get(entity.name, frozenset())
    if sel is None or sel & {"id", "@iot.id"}:
        out["@iot.id"] = key
    if sel is None or "@iot.selfLink" in sel:
        out["@iot.selfLink"] = link
    for name, prop in entity.props.items():
        if sel is None or name in sel:
            value = row.get(prop.column if entity is OBSERVATION else name)
            if value is None and sel is None and name in optional:
                continue  # optional and unset: left out, as the standard allows
            out[name] = _value(value)
    for name in entity.navs:
        if sel is None or name in sel:
            out[f"{name}@iot.navigationLink"] = f"{link}/{name}"
    return out


def render_observations(req: Req, rows: list[Row], opts: Options) -> list[dict[str, Any]]:
    """Observations without $select, written directly (the common, large case: thousands of
    rows per page); with $select through render_row."""
    if opts.select is not None:
        return [render_row(req, OBSERVATION, r, opts) for r in rows]
    root = req.root
    out = []
    for r in rows:
        text = r.get("t") or rfc3339_utc(r["ts"])
        oid = f"{r['ds_id']}:{text}"
        link = f"{root}/Observations('{oid}')"  # ids hold no quote (model.py)
        out.append(
            {
                "@iot.id": oid,
                "@iot.selfLink": link,
                "phenomenonTime": text,
                "resultTime": None,
                "result": r["value"],
                "Datastream@iot.navigationLink": link + "/Datastream",
                "FeatureOfInterest@iot.navigationLink": link + "/FeatureOfInterest",
            }
        )
    return out


def wants(entity: EntityType, opts: Options, prop: str) -> bool:
    return opts.select is None or prop in opts.select


async def render(
    req: Req, entity: EntityType, rows: list[Row], opts: Options
) -> list[dict[str, Any]]:
    if entity is DATASTREAM and wants(entity, opts, "phenomenonTime"):
        await add_phenomenon_times(req, rows)
    if entity is OBSERVATION:
        out = render_observations(req, rows, opts)
    else:
        out = [render_row(req, entity, r, opts) for r in rows]
    for e in opts.expand:
        await _expand(req, entity, rows, out, e)
    return out


_SAFE = "$',()/:"


def _link(req: Req, path: str, params: dict[str, str]) -> str:
    if not params:
        return f"{req.root}/{path}"
    return f"{req.root}/{path}?" + urlencode(params, safe=_SAFE)


def next_params(
    opts: Options, top: int, *, skip: int | None = None, token: str | None = None
) -> dict[str, str]:
    params = {**opts.raw(), "$top": str(top)}
    if skip is not None:
        params["$skip"] = str(skip)
    if token is not None:
        params["$skiptoken"] = token
    return params


async def _expand(
    req: Req, entity: EntityType, rows: list[Row], out: list[dict[str, Any]], e: Expand
) -> None:
    nav = entity.navs[e.nav]
    target = ENTITY_TYPES[nav.target]
    o = e.options
    if not nav.many:
        keys = [r.get(nav.parent_col) for r in rows]
        found = await registry_by_ids(req, target, keys)
        unique = list(found.values())
        rendered = dict(zip(found, await render(req, target, unique, o), strict=True))
        for obj, k in zip(out, keys, strict=True):
            obj[e.nav] = rendered.get(str(k))
        return
    if target is OBSERVATION:
        if entity is DATASTREAM:
            pages = await observations.pages_of_datastreams(req, _candidates(rows), o)
            by_row = [pages.get(r["id"], Page([])) for r in rows]
        else:
            by_row = [
                await observations.page(req, (nav.child_col, r[nav.parent_col]), o) for r in rows
            ]
        for row, obj, page in zip(rows, out, by_row, strict=True):
            parent_link = req.self_link(entity, str(row["id"]))
            obj[e.nav] = await render(req, target, page.rows, o)
            if o.count and page.count is not None:
                obj[f"{e.nav}@iot.count"] = page.count
            if page.next_token is not None:
                rel = parent_link.removeprefix(req.root + "/") + "/" + e.nav
                params = next_params(
                    o, o.effective_top, skip=page.skip_left or None, token=page.next_token
                )
                obj[f"{e.nav}@iot.nextLink"] = _link(req, rel, params)
        return
    keys = [r[nav.parent_col] for r in rows]
    pages = await registry_children(req, target, nav, keys, o)
    for row, obj in zip(rows, out, strict=True):
        page = pages[str(row[nav.parent_col])]
        obj[e.nav] = await render(req, target, page.rows, o)
        if o.count:
            obj[f"{e.nav}@iot.count"] = page.count
        if page.more:
            rel = req.self_link(entity, str(row["id"])).removeprefix(req.root + "/") + "/" + e.nav
            obj[f"{e.nav}@iot.nextLink"] = _link(
                req, rel, next_params(o, o.effective_top, skip=o.skip + o.effective_top)
            )


async def collection_body(
    req: Req, coll: Collection, opts: Options, ref: bool = False
) -> dict[str, Any]:
    if coll.entity is OBSERVATION:
        known = None
        if coll.parent_entity is DATASTREAM and coll.parent is not None:
            known = _candidates([coll.parent])  # the Datastream is read already
        page = await observations.page(req, coll.constraint, opts, known)
    else:
        if opts.skiptoken is not None:
            raise bad_request("$skiptoken applies to Observations only; page other sets with $skip")
        page = await registry_page(req, coll.entity, coll.constraint, opts)
    body: dict[str, Any] = {}
    if opts.count and page.count is not None:
        body["@iot.count"] = page.count
    next_link = None
    if page.next_token is not None:
        skip = page.skip_left or None  # $skip the budget left unfinished
        next_link = _link(
            req, coll.path, next_params(opts, opts.effective_top, skip=skip, token=page.next_token)
        )
    elif page.more:
        next_link = _link(
            req,
            coll.path,
            next_params(opts, opts.effective_top, skip=opts.skip + opts.effective_top),
        )
    if next_link is not None and opts.effective_top > 0:  # $top=0 asks for the count only
        body["@iot.nextLink"] = next_link
    if ref:
        body["value"] = [{"@iot.selfLink": _self(req, coll.entity, r)} for r in page.rows]
    elif opts.result_format == "dataArray":
        body["value"] = observations.data_array(req, page.rows, opts)
    else:
        body["value"] = await render(req, coll.entity, page.rows, opts)
    # OData puts the annotations first; keep count and nextLink before value.
    return body


def _candidates(datastreams: list[Row]) -> list[observations.Candidate]:
    """Datastream rows (visible to the caller: they come from its source) as candidates."""
    return [
        observations.Candidate(i, r["id"], r["sensor_id"], r["series_id"])
        for i, r in enumerate(datastreams)
        if r.get("series_id") is not None
    ]


def _self(req: Req, entity: EntityType, row: Row) -> str:
    if entity is OBSERVATION:
        return req.self_link(entity, ids.observation_id(row["ds_id"], row["ts"]))
    return req.self_link(entity, str(row["id"]))


async def entity_body(req: Req, single: Single, opts: Options, ref: bool = False) -> dict[str, Any]:
    if ref:
        return {"@iot.selfLink": _self(req, single.entity, single.row)}
    return (await render(req, single.entity, [single.row], opts))[0]


async def property_body(req: Req, target: Target) -> tuple[Any, bool]:
    """(value, raw): the JSON ``{"name": value}``, or the bare value for $value."""
    assert target.single is not None and target.prop is not None
    single = target.single
    rows = [single.row]
    if single.entity is DATASTREAM and target.prop == "phenomenonTime":
        await add_phenomenon_times(req, rows)
    rendered = render_row(req, single.entity, rows[0], Options(select=[target.prop]))
    value = rendered.get(target.prop)
    if target.raw_value:
        return value, True
    return {target.prop: value}, False

"""Observations: readings served series by series, by keyset, so a page costs about ``$top``
index entries however deep it is in hundreds of millions of rows.

**Which Datastreams.** The candidates are the caller's visible Datastreams that have readings,
narrowed by the path (``Datastreams('x')/Observations``, ``FeaturesOfInterest('x')/...``)
and by the top-level ``$filter`` conditions that name only ``Datastream/...`` or
``FeatureOfInterest/...`` (evaluated once on the registry, not per reading). The other
conditions are evaluated on each reading; those on ``phenomenonTime`` against constants also
bound the time range, so TimescaleDB excludes chunks and the index range is short.

**Orders** (what the ``(series_id, ts)`` index serves; anything else is a 400):

* default, or ``Datastream/id [asc|desc][, phenomenonTime asc|desc]``: Datastream by Datastream
  (by id), each in time order;
* ``phenomenonTime asc|desc``: one time order across the candidates (at most
  ``MEETNET_STA_MAX_MERGE_DATASTREAMS``), merged like ``store/queries.py``: a ``UNION ALL`` of
  one ``ORDER BY ts LIMIT n`` index range scan per series, merged by PostgreSQL; ties by
  Datastream id.

**Windows and budget.** Time is walked in windows from the current position (1 day, then ×8),
starting at the series' first (or last) reading, so a page of dense data is planned over one
or two chunks. A request stops starting windows after ``PAGE_BUDGET_S`` seconds or
``MAX_WINDOWS`` windows; it then answers the readings found so far with an ``@iot.nextLink``
that continues exactly there (a condition that rarely matches thus pages on instead of running
into the statement timeout).

**Paging.** ``@iot.nextLink`` carries ``$skiptoken``: the position (order, time, Datastream)
after the last reading returned, base64url-encoded. ``$skip`` is honoured up to
``MEETNET_STA_MAX_SKIP`` (it reads and drops that many readings).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from api.schemas import rfc3339_utc
from api.sta import compile as c
from api.sta import filter as f
from api.sta import ids
from api.sta.errors import bad_request
from api.sta.model import DATASTREAM, OBSERVATION
from api.sta.obsplan import (
    MAX_DS,
    US,
    Order,
    Plan,
    Position,
    add,
    decode_token,
    encode_token,
    order_of,
    plan,
)
from api.sta.query import Options, Page

FIRST_WINDOW = timedelta(days=1)
WINDOW_GROWTH = 8
MAX_WINDOWS = 32
PAGE_BUDGET_S = 3.0
CANDIDATE_BATCH = 200  # Datastreams read at once in Datastream order
Row = dict[str, Any]


@dataclass
class Candidate:
    k: int  # place in Datastream-id order
    id: str
    sensor_id: str
    series_id: int
    first: datetime | None = None  # its first and last reading, None without readings
    last: datetime | None = None


def _constraint_sql(ctx: c.Context, constraint: tuple[str, Any] | None) -> sql.Composable:
    if constraint is None:
        return sql.SQL("TRUE")
    col, value = constraint
    column = {"ds_id": "id", "sensor_id": "sensor_id"}[col]
    return sql.SQL("e.{} = {}::text").format(sql.Identifier(column), ctx.param(value))


async def candidates(
    req: Any,
    constraint: tuple[str, Any] | None,
    pl: Plan,
    *,
    desc: bool = False,
    after: str | None = None,
    inclusive: bool = True,
    limit: int,
) -> list[Candidate]:
    ctx = req.context()
    conds = [sql.SQL("e.series_id IS NOT NULL"), _constraint_sql(ctx, constraint)]
    if pl.ds_filter is not None:
        try:
            conds.append(c.condition(pl.ds_filter, c.Scope(DATASTREAM, "e"), ctx))
        except c.CompileError as e:
            raise bad_request(f"$filter: {e}") from None
    if after is not None:
        op = ("<=" if inclusive else "<") if desc else (">=" if inclusive else ">")
        conds.append(sql.SQL('e.id COLLATE "C" ' + op + " {}").format(ctx.param(after)))
    # The first and last reading of each, two index probes, for the returned rows only.
    query = sql.SQL(
        "SELECT e.id, e.sensor_id, e.series_id, {first} AS first, {last} AS last"
        ' FROM ({src}) e WHERE {where} ORDER BY e.id COLLATE "C" {direction} LIMIT {n}'
    ).format(
        first=_EDGE.format(s=sql.SQL("e.series_id"), d=sql.SQL("ASC")),
        last=_EDGE.format(s=sql.SQL("e.series_id"), d=sql.SQL("DESC")),
        src=ctx.source("Datastream"),
        where=sql.SQL(" AND ").join(conds),
        direction=sql.SQL("DESC" if desc else "ASC"),
        n=ctx.param(limit),
    )
    rows = await req.rows(query, ctx.params)
    return [
        Candidate(i, r["id"], r["sensor_id"], r["series_id"], r["first"], r["last"])
        for i, r in enumerate(rows)
    ]


_EDGE = sql.SQL("(SELECT r.ts FROM readings r WHERE r.series_id = {s} ORDER BY r.ts {d} LIMIT 1)")


async def with_extents(req: Any, cands: list[Candidate]) -> list[Candidate]:
    """Fill in the first and last reading time of candidates known without a query."""
    if not cands:
        return cands
    query = sql.SQL(
        "SELECT s AS sid, {} AS first, {} AS last FROM unnest(%(sids)s::int[]) AS s"
    ).format(
        _EDGE.format(s=sql.SQL("s"), d=sql.SQL("ASC")),
        _EDGE.format(s=sql.SQL("s"), d=sql.SQL("DESC")),
    )
    rows = await req.rows(query, {"sids": [x.series_id for x in cands]})
    edges = {r["sid"]: (r["first"], r["last"]) for r in rows}
    for x in cands:
        x.first, x.last = edges.get(x.series_id, (None, None))
    return cands


@dataclass
class _Source:
    """Where a request's candidates come from: the registry, or rows the caller already has
    (a Datastream resolved from the path, the parents of an $expand)."""

    constraint: tuple[str, Any] | None
    known: list[Candidate] | None = None

    async def fetch(
        self,
        req: Any,
        pl: Plan,
        *,
        desc: bool = False,
        after: str | None = None,
        inclusive: bool = True,
        limit: int,
    ) -> list[Candidate]:
        if self.known is None:
            return await candidates(
                req, self.constraint, pl, desc=desc, after=after, inclusive=inclusive, limit=limit
            )
        out = sorted(self.known, key=lambda x: x.id, reverse=desc)
        if after is not None:
            if desc:
                out = [x for x in out if x.id < after or (inclusive and x.id == after)]
            else:
                out = [x for x in out if x.id > after or (inclusive and x.id == after)]
        out = out[:limit]
        if any(x.first is None for x in out):
            await with_extents(req, [x for x in out if x.first is None])
        return [
            Candidate(i, x.id, x.sensor_id, x.series_id, x.first, x.last) for i, x in enumerate(out)
        ]


# --- reading ------------------------------------------------------------------------------
def _scope(ctx: c.Context, cand: Candidate) -> c.Scope:
    ds = sql.SQL("{}::text").format(ctx.param(cand.id))
    return c.Scope(
        OBSERVATION,
        "r",
        {
            "ts": sql.SQL("r.ts"),
            "value": sql.SQL("r.value"),
            "ds_id": ds,
            "sensor_id": sql.SQL("{}::text").format(ctx.param(cand.sensor_id)),
            "id": sql.SQL("({} || ':' || {})").format(ds, ids.ts_text_sql(sql.SQL("r.ts"))),
        },
    )


def _residual(ctx: c.Context, node: f.Node, cand: Candidate) -> sql.Composable:
    try:
        return c.condition(node, _scope(ctx, cand), ctx)
    except c.CompileError as e:
        raise bad_request(f"$filter: {e}") from None


def _branch(
    ctx: c.Context,
    cand: Candidate,
    pl: Plan,
    lo: datetime,
    hi: datetime,
    desc: bool,
    pos: Position | None,
    n: int,
) -> sql.Composable:
    conds: list[sql.Composable] = [
        sql.SQL("r.series_id = {}").format(ctx.param(cand.series_id)),
        sql.SQL("r.ts >= {}").format(ctx.param(lo)),
        sql.SQL("r.ts < {}").format(ctx.param(hi)),
    ]
    if pos is not None and pos.ts is not None:
        # (ts, ds) strictly after the position, ties broken by Datastream id.
        later = cand.id > pos.ds if not desc else cand.id < pos.ds
        op = (">=" if later else ">") if not desc else ("<=" if later else "<")
        conds.append(sql.SQL("r.ts " + op + " {}").format(ctx.param(pos.ts)))
    if pl.residual is not None:
        conds.append(_residual(ctx, pl.residual, cand))
    return sql.SQL(
        "(SELECT {}::int AS k, r.ts, r.value FROM readings r WHERE {} ORDER BY r.ts {} LIMIT {})"
    ).format(
        ctx.param(cand.k),
        sql.SQL(" AND ").join(conds),
        sql.SQL("DESC" if desc else "ASC"),
        ctx.param(n),
    )


# A reading found: (candidate's k, ts, value, ts as text).
Found = tuple[int, datetime, float, str]


async def _read(
    req: Any,
    cands: list[Candidate],
    pl: Plan,
    lo: datetime,
    hi: datetime,
    desc: bool,
    pos: Position | None,
    n: int,
) -> list[Found]:
    ctx = req.context()
    branches = [_branch(ctx, x, pl, lo, hi, desc, pos, n) for x in cands]
    direction = sql.SQL("DESC" if desc else "ASC")
    # The id's time text is made by the database, for the returned rows only.
    query = sql.SQL(
        "SELECT k, ts, value, {} AS t FROM ({}) u ORDER BY ts {d}, k {d} LIMIT {}"
    ).format(
        ids.ts_text_sql(sql.SQL("ts")),
        sql.SQL(" UNION ALL ").join(branches),
        ctx.param(n),
        d=direction,
    )
    rows = await req.rows(query, ctx.params)
    return [(r["k"], r["ts"], r["value"], r["t"]) for r in rows]


@dataclass
class _Walk:
    """State of one request's walk through time windows (shared budget)."""

    started: float
    windows: int = 0

    def exhausted(self) -> bool:
        return self.windows >= MAX_WINDOWS or time.monotonic() - self.started > PAGE_BUDGET_S


async def _walk(
    req: Any,
    cands: list[Candidate],
    pl: Plan,
    lo: datetime,
    hi: datetime,
    desc: bool,
    pos: Position | None,
    want: int,
    walk: _Walk,
) -> tuple[list[Found], datetime | None]:
    """Readings of ``cands`` in ``[lo, hi)`` in time order, at most ``want``. Returns them and,
    when the budget ran out before the range did, the boundary reached (the next page starts
    there)."""
    out: list[Found] = []
    window = FIRST_WINDOW
    while lo < hi and len(out) < want:
        if walk.exhausted() and walk.windows > 0:
            return out, (lo if not desc else hi)
        walk.windows += 1
        if not desc:
            w_lo, w_hi = lo, min(hi, add(lo, window))
        else:
            w_lo, w_hi = max(lo, add(hi, -window)), hi
        out += await _read(req, cands, pl, w_lo, w_hi, desc, pos, want - len(out))
        if not desc:
            lo = w_hi
        else:
            hi = w_lo
        window *= WINDOW_GROWTH
    return out, None


def _row(cand: Candidate, ts: datetime, value: float, text: str) -> Row:
    sensor, _, metric = cand.id.partition(":")
    return {
        "ds_id": cand.id,
        "sensor_id": sensor,
        "metric": metric,
        "ts": ts,
        "value": value,
        "t": text,
    }


def _prepare(req: Any, opts: Options) -> tuple[Order, Plan]:
    """The order, and the filter split into Datastream conditions, per-reading conditions and
    time bounds; every limit and condition checked (a 400 even when no series matches)."""
    order = order_of(opts)
    if opts.skip > req.limits.max_skip:
        raise bad_request(
            f"$skip may be at most {req.limits.max_skip} on Observations; follow @iot.nextLink "
            "to page further (it continues by position, at any depth)"
        )
    pl = plan(opts, req.now)
    if pl.residual is not None:
        _residual(req.context(), pl.residual, Candidate(0, "x:y", "x", 0))
    if pl.ds_filter is not None:
        try:
            c.condition(pl.ds_filter, c.Scope(DATASTREAM, "e"), req.context())
        except c.CompileError as e:
            raise bad_request(f"$filter: {e}") from None
    return order, pl


def _want(opts: Options) -> int:
    """Readings to read: the skipped ones, the page, and one more to know whether it goes on."""
    return opts.skip + opts.effective_top + 1 if opts.effective_top > 0 else 0


def _finish(order: Order, opts: Options, rows: list[Row], stop: Position | None) -> Page:
    skip_left = max(0, opts.skip - len(rows))
    rows = rows[opts.skip :]
    top = opts.effective_top
    token = None
    if top == 0:  # $top=0: the count only
        rows = []
    elif len(rows) > top:
        rows = rows[:top]
        last = rows[-1]
        token = encode_token(order, Position(last["ts"], last["ds_id"]))
    elif stop is not None:
        token = encode_token(order, stop)
    return Page(rows, None, token is not None, token, skip_left if token else 0)


async def page(
    req: Any,
    constraint: tuple[str, Any] | None,
    opts: Options,
    known: list[Candidate] | None = None,
) -> Page:
    """One page of Observations under ``constraint``; ``known``: the candidate Datastreams
    when the caller already read them (they must satisfy the constraint and be visible)."""
    order, pl = _prepare(req, opts)
    pos = decode_token(opts.skiptoken, order) if opts.skiptoken else None
    want = _want(opts)
    walk = _Walk(time.monotonic())
    source = _Source(constraint, known if pl.ds_filter is None else None)
    rows: list[Row]
    stop: Position | None
    if want == 0:
        rows, stop = [], None
    elif order.mode == "time":
        rows, stop = await _time_order(req, source, pl, order, pos, want, walk)
    else:
        rows, stop = await _series_order(req, source, pl, order, pos, want, walk)
    result = _finish(order, opts, rows, stop)
    if opts.count:
        result.count = await _count(req, constraint, pl)
    return result


async def pages_of_datastreams(
    req: Any, parents: list[Candidate], opts: Options
) -> dict[str, Page]:
    """The expanded Observations of each of a page of Datastreams, in two queries for the
    common case (``$expand=Observations($top=1;$orderby=phenomenonTime desc)``): the series'
    first and last readings, then every parent's first window in one ``UNION ALL``. A parent
    whose page is not full after its first window continues window by window on its own."""
    order, pl = _prepare(req, opts)
    if pl.ds_filter is not None or opts.count:
        return {
            x.id: await page(req, ("ds_id", x.id), opts, [x] if x.series_id else [])
            for x in parents
        }
    want = _want(opts)
    desc = order.time_desc
    out: dict[str, Page] = {x.id: Page([]) for x in parents}
    cands = [x for x in parents if x.series_id]
    if want == 0 or not cands:
        return out
    await with_extents(req, [x for x in cands if x.first is None])
    ranges: dict[str, tuple[datetime, datetime]] = {}
    for x in cands:
        if x.first is not None and x.last is not None:
            lo, hi = max(pl.lo, x.first), min(pl.hi, add(x.last, US))
            if lo < hi:
                ranges[x.id] = (lo, hi)
    live = [x for x in cands if x.id in ranges]
    found: dict[str, list[Row]] = {x.id: [] for x in live}
    if live:
        ctx = req.context()
        branches = []
        for i, x in enumerate(live):
            lo, hi = ranges[x.id]
            w_lo, w_hi = (
                (lo, min(hi, add(lo, FIRST_WINDOW)))
                if not desc
                else (max(lo, add(hi, -FIRST_WINDOW)), hi)
            )
            ranges[x.id] = (lo, w_lo) if desc else (w_hi, hi)  # what is left after the window
            branches.append(
                _branch(
                    ctx,
                    Candidate(i, x.id, x.sensor_id, x.series_id),
                    pl,
                    w_lo,
                    w_hi,
                    desc,
                    None,
                    want,
                )
            )
        query = sql.SQL("SELECT k, ts, value, {} AS t FROM ({}) u").format(
            ids.ts_text_sql(sql.SQL("ts")), sql.SQL(" UNION ALL ").join(branches)
        )
        for r in await req.rows(query, ctx.params):
            x = live[r["k"]]
            found[x.id].append(_row(x, r["ts"], r["value"], r["t"]))
    walk = _Walk(time.monotonic())
    for x in parents:
        rows = sorted(found.get(x.id, []), key=lambda r: r["ts"], reverse=desc)
        stop = None
        left = ranges.get(x.id)
        if x.id in found and len(rows) < want and left is not None and left[0] < left[1]:
            more, boundary = await _walk(
                req, [x], pl, left[0], left[1], desc, None, want - len(rows), walk
            )
            rows += [_row(x, ts, v, t) for _, ts, v, t in more]
            if boundary is not None:
                stop = Position(add(boundary, -US) if not desc else boundary, x.id)
        out[x.id] = _finish(order, opts, rows, stop)
    return out


async def _time_order(
    req: Any,
    source: _Source,
    pl: Plan,
    order: Order,
    pos: Position | None,
    want: int,
    walk: _Walk,
) -> tuple[list[Row], Position | None]:
    cands = await source.fetch(req, pl, limit=req.max_merge + 1)
    if len(cands) > req.max_merge:
        raise bad_request(
            f"ordering Observations by phenomenonTime merges at most {req.max_merge} Datastreams "
            "and this request spans more: narrow it (Datastreams('<id>')/Observations, or "
            "$filter=Datastream/Thing/id eq '...'), or order by Datastream/id"
        )
    cands = [x for x in cands if x.first is not None and x.last is not None]
    if not cands:
        return [], None
    lo = max(pl.lo, min(x.first for x in cands if x.first is not None))
    hi = min(pl.hi, add(max(x.last for x in cands if x.last is not None), US))
    if pos is not None and pos.ts is not None:
        if order.time_desc:
            hi = min(hi, add(pos.ts, US))
        else:
            lo = max(lo, pos.ts)
    found, boundary = await _walk(req, cands, pl, lo, hi, order.time_desc, pos, want, walk)
    by_k = {x.k: x for x in cands}
    rows = [_row(by_k[k], ts, v, t) for k, ts, v, t in found]
    stop = None
    if boundary is not None:
        # Every reading on the far side of the boundary was read.
        stop = (
            Position(add(boundary, -US), MAX_DS) if not order.time_desc else Position(boundary, "")
        )
    return rows, stop


async def _series_order(
    req: Any,
    source: _Source,
    pl: Plan,
    order: Order,
    pos: Position | None,
    want: int,
    walk: _Walk,
) -> tuple[list[Row], Position | None]:
    rows: list[Row] = []
    after, inclusive = (pos.ds, pos.ts is not None) if pos is not None else (None, True)
    # The last Datastream read completely: where a page cut short by the budget resumes.
    done = pos.ds if pos is not None and pos.ts is None else None
    while len(rows) < want:
        batch = await source.fetch(
            req, pl, desc=order.ds_desc, after=after, inclusive=inclusive, limit=CANDIDATE_BATCH
        )
        if not batch:
            return rows, None
        for cand in batch:
            if done is not None and walk.windows > 0 and walk.exhausted():
                return rows, Position(None, done)
            start_pos = pos if pos is not None and pos.ds == cand.id else None
            if cand.first is not None and cand.last is not None:
                lo = max(pl.lo, cand.first)
                hi = min(pl.hi, add(cand.last, US))
                if start_pos is not None and start_pos.ts is not None:
                    if order.time_desc:
                        hi = min(hi, start_pos.ts)
                    else:
                        lo = max(lo, add(start_pos.ts, US))
                found, boundary = await _walk(
                    req, [cand], pl, lo, hi, order.time_desc, None, want - len(rows), walk
                )
                rows += [_row(cand, ts, v, t) for _, ts, v, t in found]
                if boundary is not None:
                    edge = add(boundary, -US) if not order.time_desc else boundary
                    return rows, Position(edge, cand.id)
            if len(rows) >= want:
                return rows, None
            done = cand.id
        after, inclusive = batch[-1].id, False
    return rows, None


async def _count(req: Any, constraint: tuple[str, Any] | None, pl: Plan) -> int:
    """Exact count over every candidate (bounded by the statement timeout)."""
    total = 0
    after: str | None = None
    while True:
        batch = await candidates(
            req, constraint, pl, after=after, inclusive=False, limit=CANDIDATE_BATCH
        )
        if not batch:
            return total
        ctx = req.context()
        parts = []
        for cand in batch:
            conds: list[sql.Composable] = [
                sql.SQL("r.series_id = {}").format(ctx.param(cand.series_id)),
                sql.SQL("r.ts >= {}").format(ctx.param(pl.lo)),
                sql.SQL("r.ts < {}").format(ctx.param(pl.hi)),
            ]
            if pl.residual is not None:
                conds.append(_residual(ctx, pl.residual, cand))
            parts.append(
                sql.SQL("(SELECT count(*) AS n FROM readings r WHERE {})").format(
                    sql.SQL(" AND ").join(conds)
                )
            )
        query = sql.SQL("SELECT coalesce(sum(n), 0) AS n FROM ({}) u").format(
            sql.SQL(" UNION ALL ").join(parts)
        )
        total += int((await req.rows(query, ctx.params))[0]["n"])
        after = batch[-1].id


async def single(req: Any, key: str, constraint: tuple[str, Any] | None) -> Row | None:
    parsed = ids.parse_observation_id(key)
    if parsed is None:
        return None
    ds_id, ts = parsed
    sensor, _, metric = ds_id.partition(":")
    if constraint is not None:
        col, value = constraint
        if (col == "ds_id" and value != ds_id) or (col == "sensor_id" and value != sensor):
            return None
    ctx = req.context()
    query = sql.SQL(
        "SELECT r.ts, r.value FROM ({}) e JOIN readings r ON r.series_id = e.series_id"
        " WHERE e.id = {}::text AND r.ts = {}"
    ).format(ctx.source("Datastream"), ctx.param(ds_id), ctx.param(ts))
    rows = await req.rows(query, ctx.params)
    if not rows:
        return None
    return {
        "ds_id": ds_id,
        "sensor_id": sensor,
        "metric": metric,
        "ts": rows[0]["ts"],
        "value": rows[0]["value"],
    }


# --- dataArray ----------------------------------------------------------------------------
DATA_ARRAY_COMPONENTS = ("id", "phenomenonTime", "resultTime", "result")


def data_array(req: Any, rows: list[Row], opts: Options) -> list[dict[str, Any]]:
    """OGC 18-088 §14.4: one object per Datastream with ``components`` and ``dataArray``."""
    components = list(DATA_ARRAY_COMPONENTS)
    if opts.select is not None:
        components = ["id" if s == "@iot.id" else s for s in opts.select]
        for name in components:
            if name not in ("id", *OBSERVATION.props):
                raise bad_request(
                    f"$select with $resultFormat=dataArray lists Observation properties "
                    f"(id, phenomenonTime, resultTime, result), not {name!r}"
                )
    groups: dict[str, list[list[Any]]] = {}
    for r in rows:
        values: list[Any] = []
        for name in components:
            if name == "id":
                values.append(f"{r['ds_id']}:{r.get('t') or rfc3339_utc(r['ts'])}")
            elif name == "phenomenonTime":
                values.append(r.get("t") or rfc3339_utc(r["ts"]))
            elif name == "result":
                values.append(r["value"])
            else:
                values.append(None)
        groups.setdefault(r["ds_id"], []).append(values)
    return [
        {
            "Datastream@iot.navigationLink": req.self_link(DATASTREAM, ds),
            "components": components,
            "dataArray@iot.count": len(values),
            "dataArray": values,
        }
        for ds, values in groups.items()
    ]


__all__ = ["Order", "Page", "data_array", "order_of", "page", "single"]

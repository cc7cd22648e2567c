"""How an Observations request is read: its order (what the (series, time) index serves),
the position a page continues from (``$skiptoken``), and its ``$filter`` split into
Datastream conditions, per-reading conditions and time bounds."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from api.sta import compile as c
from api.sta import filter as f
from api.sta.errors import bad_request
from api.sta.model import ID_NAMES
from api.sta.query import Options

US = timedelta(microseconds=1)
MIN_TS = datetime(1, 1, 1, tzinfo=UTC)
MAX_TS = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
MAX_DS = "\U0010ffff"  # after every id
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Order:
    mode: str  # "time" | "series"
    time_desc: bool
    ds_desc: bool = False


@dataclass(frozen=True)
class Position:
    """Where the previous page ended. Time mode: after (ts, ds) in the order. Series mode:
    after ts within Datastream ds (ts None: after the whole Datastream)."""

    ts: datetime | None
    ds: str


ORDER_HELP = (
    "Observations can be ordered by phenomenonTime (asc or desc) or by Datastream/id "
    "(optionally then phenomenonTime): the orders the (series, time) index serves"
)


def _is_ds_id(node: f.Node) -> bool:
    return (
        isinstance(node, f.Path)
        and len(node.segments) == 2
        and (node.segments[0] == "Datastream" and node.segments[1] in ID_NAMES)
    )


def _is_time(node: f.Node) -> bool:
    return isinstance(node, f.Path) and node.segments in (("phenomenonTime",), ("resultTime",))


def order_of(opts: Options) -> Order:
    items = opts.orderby
    for item in items:
        if isinstance(item.expr, f.Path) and item.expr.segments == ("resultTime",):
            raise bad_request(
                "$orderby: meetnet stores no separate resultTime (it is null); order by "
                "phenomenonTime"
            )
    if not items:
        return Order("series", False, False)
    first = items[0]
    if _is_time(first.expr):
        if len(items) == 1:
            return Order("time", first.descending, first.descending)
        if len(items) == 2 and _is_ds_id(items[1].expr) and items[1].descending == first.descending:
            return Order("time", first.descending, first.descending)
    elif _is_ds_id(first.expr):
        if len(items) == 1:
            return Order("series", False, first.descending)
        if len(items) == 2 and _is_time(items[1].expr):
            return Order("series", items[1].descending, first.descending)
    raise bad_request(f"$orderby {opts.orderby_text!r} is not supported: {ORDER_HELP}")


# --- skiptoken -----------------------------------------------------------------------------
def _us(ts: datetime) -> int:
    d = ts - EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def encode_token(order: Order, pos: Position) -> str:
    ts = "" if pos.ts is None else str(_us(pos.ts))
    flags = f"{order.mode[0]}{int(order.time_desc)}{int(order.ds_desc)}"
    raw = f"o1|{flags}|{ts}|{pos.ds}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_token(token: str, order: Order) -> Position:
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        version, flags, ts, ds = raw.decode("utf-8").split("|", 3)
        if version != "o1" or len(ds) > 200 or (ts and not ts.lstrip("-").isdigit()):
            raise ValueError
        position = Position(EPOCH + timedelta(microseconds=int(ts)) if ts else None, ds)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise bad_request(
            "malformed $skiptoken: follow the @iot.nextLink of a previous page unchanged"
        ) from None
    want = f"{order.mode[0]}{int(order.time_desc)}{int(order.ds_desc)}"
    if flags != want:
        raise bad_request("this $skiptoken belongs to a request with another $orderby")
    return position


# --- splitting the filter ------------------------------------------------------------------
def _datastream_level(node: f.Node) -> bool:
    return all(
        p.segments[0] in ("Datastream", "FeatureOfInterest") and len(p.segments) > 1
        for p in f.paths(node)
    )


def _to_datastream_scope(node: f.Node) -> f.Node:
    """``Datastream/x`` -> ``x`` (FeatureOfInterest/... stays: a Datastream reaches it)."""
    if isinstance(node, f.Path):
        if node.segments[0] == "Datastream":
            return f.Path(node.segments[1:])
        return node
    if isinstance(node, f.Call):
        return f.Call(node.name, tuple(_to_datastream_scope(a) for a in node.args))
    if isinstance(node, f.Unary):
        return f.Unary(node.op, _to_datastream_scope(node.operand))
    if isinstance(node, f.Binary):
        return f.Binary(node.op, _to_datastream_scope(node.left), _to_datastream_scope(node.right))
    return node


def _join(nodes: list[f.Node]) -> f.Node | None:
    if not nodes:
        return None
    out = nodes[0]
    for n in nodes[1:]:
        out = f.Binary("and", out, n)
    return out


@dataclass
class Plan:
    ds_filter: f.Node | None
    residual: f.Node | None
    lo: datetime  # inclusive
    hi: datetime  # exclusive


def plan(opts: Options, now: datetime) -> Plan:
    ds_terms: list[f.Node] = []
    rest: list[f.Node] = []
    lo, hi = MIN_TS, MAX_TS
    for term in f.conjuncts(opts.filter) if opts.filter is not None else []:
        if _datastream_level(term) and f.paths(term):
            ds_terms.append(_to_datastream_scope(term))
            continue
        rest.append(term)
        bound = _time_bound(term, now)
        if bound is not None:
            lo, hi = max(lo, bound[0]), min(hi, bound[1])
    return Plan(_join(ds_terms), _join(rest), lo, hi)


def _time_bound(term: f.Node, now: datetime) -> tuple[datetime, datetime] | None:
    if not (isinstance(term, f.Binary) and term.op in f.COMPARISONS and term.op != "ne"):
        return None
    op, left, right = term.op, term.left, term.right
    if not _is_phenomenon(left):
        op = {"eq": "eq", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}[op]
        left, right = right, left
    if not _is_phenomenon(left):
        return None
    t = c.const_datetime(right, now)
    if t is None:
        return None
    try:
        return {
            "eq": (t, t + US),
            "gt": (t + US, MAX_TS),
            "ge": (t, MAX_TS),
            "lt": (MIN_TS, t),
            "le": (MIN_TS, t + US),
        }[op]
    except OverflowError:
        return None


def _is_phenomenon(node: f.Node) -> bool:
    return isinstance(node, f.Path) and node.segments == ("phenomenonTime",)


# --- candidates ----------------------------------------------------------------------------


def add(t: datetime, d: timedelta) -> datetime:
    try:
        return t + d
    except OverflowError:
        return MAX_TS if d > timedelta(0) else MIN_TS


# --- pages --------------------------------------------------------------------------------

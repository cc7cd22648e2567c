"""The built-in functions of ``$filter`` (OGC 18-088 Table 24) compiled to SQL: strings,
dates and times (in UTC), rounding, and the spatial functions (see ``api/sta/geo.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from psycopg import sql

from api.sta import geo
from api.sta import spatial as sql_spatial
from api.sta.types import TYPE_NAMES, Expr, err

MIN_DATETIME = datetime(1, 1, 1, tzinfo=UTC)
MAX_DATETIME = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


class _Ctx(Protocol):
    now: datetime


class Compiler(Protocol):
    """What the functions need of the compiler: parameters and the request's now()."""

    @property
    def ctx(self) -> _Ctx: ...

    def p(self, value: Any) -> sql.Composable: ...


def text(self, e: Expr, fn: str) -> sql.Composable:
    if e.type == "string":
        return e.sql
    if e.type == "json":
        return sql.SQL("({} #>> '{{}}')").format(e.sql)
    if e.type in ("number", "null"):
        return sql.SQL("({})::text").format(e.sql)
    raise err(f"{fn}() works on strings, not on {TYPE_NAMES[e.type]}")


def number(c: Compiler, e: Expr, fn: str) -> sql.Composable:
    if e.type in ("number", "null"):
        return e.sql
    if e.type == "json":
        return sql.SQL(
            "CASE WHEN jsonb_typeof({j}) = 'number' THEN ({j} #>> '{{}}')::float8 END"
        ).format(j=e.sql)
    raise err(f"{fn}() needs a number, not {TYPE_NAMES[e.type]}")


def instant(c: Compiler, e: Expr, fn: str, allowed: tuple[str, ...]) -> tuple[str, sql.Composable]:
    if e.type == "datetime":
        return "datetime", sql.SQL("({} AT TIME ZONE 'UTC')").format(e.sql)
    if e.type in allowed:
        return e.type, e.sql
    want = " or ".join(TYPE_NAMES[t] for t in ("datetime", *allowed))
    raise err(f"{fn}() needs {want}, not {TYPE_NAMES[e.type]}")


S = sql.SQL

# Templates: {0}, {1}, ... are the (text) arguments.
_STRING_TEMPLATES = {
    "substringof": ("bool", "(strpos({1}, {0}) > 0)"),
    "contains": ("bool", "(strpos({0}, {1}) > 0)"),
    "endswith": ("bool", "(right({0}, char_length({1})) = {1})"),
    "startswith": ("bool", "starts_with({0}, {1})"),
    "indexof": ("number", "(strpos({0}, {1}) - 1)"),
    "concat": ("string", "concat({0}, {1})"),
    "length": ("number", "char_length({0})"),
    "tolower": ("string", "lower({0})"),
    "toupper": ("string", "upper({0})"),
    "trim": ("string", "btrim({0})"),
}
# name -> (result type, template over the UTC instant, other argument types allowed)
_TIME_TEMPLATES = {
    "year": ("number", "extract(year FROM {0})::int", ("date",)),
    "month": ("number", "extract(month FROM {0})::int", ("date",)),
    "day": ("number", "extract(day FROM {0})::int", ("date",)),
    "hour": ("number", "extract(hour FROM {0})::int", ("time",)),
    "minute": ("number", "extract(minute FROM {0})::int", ("time",)),
    "second": ("number", "floor(extract(second FROM {0}))::int", ("time",)),
    "fractionalseconds": (
        "number",
        "(extract(second FROM {0}) - floor(extract(second FROM {0})))::float8",
        ("time",),
    ),
    "date": ("date", "({0})::date", ()),
    "time": ("time", "({0})::time", ()),
    "totaloffsetminutes": ("number", "0", ()),  # meetnet keeps every instant in UTC
}
_ROUNDING = {
    "round": "round({0}::numeric)::float8",
    "floor": "floor({0})",
    "ceiling": "ceil({0})",
}


def call(c: Compiler, name: str, args: list[Expr]) -> Expr:
    """SQL of the built-in function ``name`` (the parser checked that it exists and its
    arity)."""
    if name in _STRING_TEMPLATES:
        typ, template = _STRING_TEMPLATES[name]
        return Expr(typ, S(template).format(*(text(c, a, name) for a in args)))
    if name == "substring":
        return _substring(c, args)
    if name in _TIME_TEMPLATES:
        typ, template, allowed = _TIME_TEMPLATES[name]
        _, x = instant(c, args[0], name, allowed)
        return Expr(typ, S(template).format(x))
    if name in ("now", "mindatetime", "maxdatetime"):
        value = {"now": c.ctx.now, "mindatetime": MIN_DATETIME, "maxdatetime": MAX_DATETIME}[name]
        return Expr("datetime", S("{}::timestamptz").format(c.p(value)), const=value)
    if name in _ROUNDING:
        return Expr("number", S(_ROUNDING[name]).format(number(c, args[0], name)))
    return _geometry_function(c, name, args)


def _substring(c: Compiler, args: list[Expr]) -> Expr:
    s = text(c, args[0], "substring")
    start = S("({})::int + 1").format(number(c, args[1], "substring"))  # OData counts from 0
    if len(args) == 2:
        return Expr("string", S("substr({}, {})").format(s, start))
    n = S("({})::int").format(number(c, args[2], "substring"))
    return Expr("string", S("substr({}, {}, {})").format(s, start, n))


def _geometry_function(c: Compiler, name: str, args: list[Expr]) -> Expr:
    if name == "geo.length":
        g = args[0]
        if g.type != "geometry":
            raise err("geo.length() needs a geometry")
        length = geo.length(g.geom) if g.geom is not None else 0.0
        return Expr("number", S("{}::float8").format(c.p(length)))
    if name == "geo.distance":
        return Expr("number", distance(c, args[0], args[1]))
    pattern = None
    if name == "st_relate":
        p = args[2]
        if not (p.is_const and isinstance(p.const, str)):
            raise err("st_relate() takes the DE-9IM pattern as a string literal, e.g. 'T*F**F***'")
        pattern = p.const
    return Expr("bool", relation(c, name, args[0], args[1], pattern))


def _geometries(fn: str, a: Expr, b: Expr) -> None:
    for e in (a, b):
        if e.type != "geometry":
            raise err(
                f"{fn}() compares geometries (location, feature, observedArea or a "
                f"geography'...' literal), not {TYPE_NAMES[e.type]}"
            )


def relation(c: Compiler, name: str, a: Expr, b: Expr, pattern: str | None) -> sql.Composable:
    _geometries(name, a, b)
    try:
        if a.geom is None and b.geom is None:  # two point columns
            results = geo.relate_for(name, geo.point(0.0, 0.0), True, pattern)
            equal = sql.SQL("({} ~= {})").format(a.sql, b.sql)
            return sql_spatial.by_location(results, equal, sql_spatial.FALSE)
        if a.geom is not None and b.geom is not None:
            value = _literal_relation(name, a.geom, b.geom, pattern)
            return sql.SQL("TRUE" if value else "FALSE")
        column, lit, point_first = (a, b, True) if b.geom is not None else (b, a, False)
        assert lit.geom is not None
        results = geo.relate_for(name, lit.geom, point_first, pattern)
    except geo.GeometryError as e:
        raise err(str(e)) from None
    interior, boundary = sql_spatial.location(column.sql, lit.geom, c.p)
    return sql_spatial.by_location(results, interior, boundary)


def distance(c: Compiler, a: Expr, b: Expr) -> sql.Composable:
    _geometries("geo.distance", a, b)
    if a.geom is None and b.geom is None:
        return sql.SQL("({} <-> {})").format(a.sql, b.sql)
    if a.geom is not None and b.geom is not None:
        for p, g in ((a.geom, b.geom), (b.geom, a.geom)):
            if p.kind == "Point":
                return sql.SQL("{}::float8").format(c.p(geo.distance(p.parts[0][0], g)))
        raise err("geo.distance() of two literals needs one of them to be a POINT")
    column, lit = (a, b) if b.geom is not None else (b, a)
    assert lit.geom is not None
    return sql_spatial.distance(column.sql, lit.geom, c.p)


def _literal_relation(name: str, a: geo.Geometry, b: geo.Geometry, pattern: str | None) -> bool:
    if a.kind == "Point":
        return geo.relate_for(name, b, True, pattern)[geo.locate(a.parts[0][0], b)]
    if b.kind == "Point":
        return geo.relate_for(name, a, False, pattern)[geo.locate(b.parts[0][0], a)]
    raise geo.GeometryError(
        f"{name}() of two literals needs one of them to be a POINT (meetnet's geometries are "
        "points)"
    )

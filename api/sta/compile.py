"""Type-check a ``$filter``/``$orderby`` AST (``api/sta/filter.py``) and compile it to SQL.

Every value from the request is a bound parameter (``%(fN)s``); names of columns and aliases
come only from the entity model. A path through a navigation property becomes an ``EXISTS``
over the related entity set's source (so its visibility rule applies too) around the smallest
condition that contains it: ``Datastreams/name eq 'x'`` on Things is "some visible datastream
of the thing is named x", and ``not (...)`` negates that. In ``$orderby`` only single-valued
paths (``Thing/name``) are allowed, as scalar sub-queries.

Comparisons follow OData: ``eq``/``ne`` with ``null`` test for null; ``ne`` is true when one side
is null and the other is not; ordering comparisons with null are false. A value of type Any
(``result`` is always numeric in meetnet; JSON sub-properties such as ``properties/status``
are typed per row) compares with a literal of one type only where its JSON type matches.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from psycopg.sql import Composable

from api.sta import filter as f
from api.sta import geo, ids, sources, spatial
from api.sta.model import ENTITY_TYPES, ID_NAMES, OBSERVATION, EntityType
from store.access import Principal

MIN_DATETIME = datetime(1, 1, 1, tzinfo=UTC)
MAX_DATETIME = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

_SQL_OPS = {
    "eq": "=",
    "ne": "IS DISTINCT FROM",
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
}
_FLIP = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}
_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "bool": "a boolean",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time of day",
    "duration": "a duration",
    "geometry": "a geometry",
    "json": "a JSON value",
    "interval": "a time interval",
    "null": "null",
}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_RFC3339_SQL = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"
_NOCONST = object()
_SORT_TYPES = {
    "string": "text",
    "number": "float8",
    "bool": "boolean",
    "datetime": "timestamptz",
    "date": "date",
    "time": "time",
    "duration": "interval",
    "json": "jsonb",
    "interval": "timestamptz",
}


class CompileError(ValueError):
    pass


@dataclass
class Expr:
    type: str
    sql: Composable = field(default_factory=lambda: sql.SQL("NULL"))
    const: Any = _NOCONST  # the Python value, for literals
    geom: geo.Geometry | None = None  # a geometry literal
    bounds: tuple[Composable, Composable] | None = None  # an interval's ends
    obs_id: bool = False  # the id of an Observation (compared by its parts)
    id_parts: tuple[Composable, Composable] | None = None  # (datastream id, ts)

    @property
    def is_const(self) -> bool:
        return self.const is not _NOCONST


@dataclass
class Scope:
    """Compiling over one row of ``entity`` named ``alias``; ``columns`` overrides column
    access (the Observations engine maps ``ts``, ``value``, ``ds_id``, ``sensor_id``)."""

    entity: EntityType
    alias: str
    columns: dict[str, sql.Composable] | None = None

    def col(self, name: str) -> sql.Composable:
        if self.columns is not None and name in self.columns:
            return self.columns[name]
        return sql.SQL("{}.{}").format(sql.Identifier(self.alias), sql.Identifier(name))


@dataclass
class _Binding:
    source: sql.Composable
    alias: str
    condition: sql.Composable


@dataclass
class Context:
    """Per request: who asks (visibility of every source), the base URL, the request's
    ``now()`` and the query's parameters (filled as fragments are compiled)."""

    principal: Principal
    base: str
    now: datetime
    params: dict[str, Any] = field(default_factory=dict)
    _n: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.params.update(sources.base_params(self.principal, self.base))

    def param(self, value: Any) -> sql.Composable:
        name = f"f{next(self._n)}"
        self.params[name] = value
        return sql.Placeholder(name)

    def alias(self) -> str:
        return f"a{next(self._n)}"

    def source(self, entity: str) -> sql.Composable:
        return sources.source(entity, self.principal)


def _err(message: str) -> CompileError:
    return CompileError(message)


# --- entry points ---------------------------------------------------------------------------
def condition(node: f.Node, scope: Scope, ctx: Context) -> sql.Composable:
    """SQL for a ``$filter`` expression (which must be a condition)."""
    return _Compiler(ctx).boolean(node, scope)


def order_terms(items: list[f.OrderItem], scope: Scope, ctx: Context) -> list[sql.Composable]:
    c = _Compiler(ctx)
    out: list[sql.Composable] = []
    for item in items:
        e = c.value(item.expr, scope, None)
        if e.type in ("geometry",):
            raise _err("$orderby cannot sort by a geometry; sort by geo.distance(...) instead")
        if e.type == "null":
            raise _err("$orderby cannot sort by null")
        term = e.bounds[0] if e.type == "interval" and e.bounds else e.sql
        # A cast keeps a constant (TRUE, 0, ...) from being read as a column position.
        term = sql.SQL("({})::" + _SORT_TYPES[e.type]).format(term)
        if e.type == "string":
            term = sql.SQL('{} COLLATE "C"').format(term)
        out.append(sql.SQL("{} DESC").format(term) if item.descending else term)
    return out


def const_datetime(node: f.Node, now: datetime) -> datetime | None:
    """The value of a constant date-time expression (a literal, now(), now() sub duration'P1D',
    ...), or None when ``node`` is not one."""
    if isinstance(node, f.Literal):
        return node.value if node.kind == "datetime" else None
    if isinstance(node, f.Call) and not node.args:
        return {"now": now, "mindatetime": MIN_DATETIME, "maxdatetime": MAX_DATETIME}.get(node.name)
    if isinstance(node, f.Binary) and node.op in ("add", "sub"):
        base = const_datetime(node.left, now)
        d = node.right
        if base is not None and isinstance(d, f.Literal) and d.kind == "duration":
            try:
                return base + d.value if node.op == "add" else base - d.value
            except OverflowError:
                return None
    return None


# --- the compiler ---------------------------------------------------------------------------
class _Compiler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def p(self, value: Any) -> sql.Composable:
        return self.ctx.param(value)

    # boolean structure
    def boolean(self, node: f.Node, scope: Scope) -> sql.Composable:
        if isinstance(node, f.Binary) and node.op in f.LOGICAL:
            op = sql.SQL(" AND " if node.op == "and" else " OR ")
            return sql.SQL("({})").format(
                op.join([self.boolean(node.left, scope), self.boolean(node.right, scope)])
            )
        if isinstance(node, f.Unary) and node.op == "not":
            return sql.SQL("(NOT coalesce({}, FALSE))").format(self.boolean(node.operand, scope))
        bindings: list[_Binding] = []
        e = self.value(node, scope, bindings)
        if e.type != "bool":
            raise _err(
                f"the expression is {_TYPE_NAMES.get(e.type, e.type)}, not a condition: "
                "compare it (eq, ne, gt, ge, lt, le) or use a function that returns true/false"
            )
        cond = e.sql
        for b in reversed(bindings):
            cond = sql.SQL("EXISTS (SELECT 1 FROM ({}) {} WHERE {} AND {})").format(
                b.source, sql.Identifier(b.alias), b.condition, cond
            )
        return cond

    # values
    def value(self, node: f.Node, scope: Scope, bindings: list[_Binding] | None) -> Expr:
        if isinstance(node, f.Literal):
            return self.literal(node)
        if isinstance(node, f.Path):
            return self.path(node.segments, scope, bindings, str(node))
        if isinstance(node, f.Call):
            args = [self.value(a, scope, bindings) for a in node.args]
            return self.call(node.name, args, node)
        if isinstance(node, f.Unary):
            e = self.value(node.operand, scope, bindings)
            if node.op == "not":
                if e.type != "bool":
                    raise _err("'not' needs a condition")
                return Expr("bool", sql.SQL("(NOT coalesce({}, FALSE))").format(e.sql))
            if e.type not in ("number", "duration"):
                raise _err(f"'-' needs a number or a duration, not {_TYPE_NAMES[e.type]}")
            return Expr(e.type, sql.SQL("(- {})").format(e.sql))
        assert isinstance(node, f.Binary)
        left = self.value(node.left, scope, bindings)
        right = self.value(node.right, scope, bindings)
        if node.op in f.COMPARISONS:
            return Expr("bool", self.compare(node.op, left, right))
        if node.op in f.LOGICAL:
            if left.type != "bool" or right.type != "bool":
                raise _err(f"'{node.op}' joins conditions, not values")
            op = sql.SQL(" AND " if node.op == "and" else " OR ")
            return Expr("bool", sql.SQL("({})").format(op.join([left.sql, right.sql])))
        return self.arithmetic(node.op, left, right)

    def literal(self, node: f.Literal) -> Expr:
        v, kind = node.value, node.kind
        if kind == "null":
            return Expr("null", sql.SQL("NULL"), const=None)
        if kind == "geometry":
            return Expr("geometry", sql.SQL("NULL"), const=v, geom=v)
        if kind == "number":
            cast = "int8" if isinstance(v, int) else "float8"
            return Expr("number", sql.SQL("{}::" + cast).format(self.p(v)), const=v)
        cast = {
            "string": "text",
            "bool": "boolean",
            "datetime": "timestamptz",
            "date": "date",
            "time": "time",
            "duration": "interval",
        }[kind]
        return Expr(kind, sql.SQL("{}::" + cast).format(self.p(v)), const=v)

    def path(
        self, segs: tuple[str, ...], scope: Scope, bindings: list[_Binding] | None, text: str
    ) -> Expr:
        ent = scope.entity
        head, rest = segs[0], segs[1:]
        if head in ID_NAMES:
            if rest:
                raise _err(f"'{text}': an id has no sub-properties")
            if ent is OBSERVATION:
                return Expr(
                    "string",
                    scope.col("id"),
                    obs_id=True,
                    id_parts=(scope.col("ds_id"), scope.col("ts")),
                )
            return Expr("string", scope.col("id"))
        prop = ent.props.get(head)
        if prop is not None:
            col = scope.col(prop.column)
            if prop.type == "json":
                if not rest:
                    return Expr("json", col)
                return Expr("json", sql.SQL("({} #> {}::text[])").format(col, self.p(list(rest))))
            if rest:
                raise _err(f"'{text}': {ent.name}.{head} has no sub-properties")
            if prop.type == "geometry":
                return Expr(
                    "geometry", sql.SQL("point({}, {})").format(scope.col("lon"), scope.col("lat"))
                )
            if prop.type == "interval":
                sid = scope.col("series_id")
                first = sql.SQL(
                    "(SELECT r.ts FROM readings r WHERE r.series_id = {} ORDER BY r.ts LIMIT 1)"
                ).format(sid)
                last = sql.SQL(
                    "(SELECT r.ts FROM readings r WHERE r.series_id = {}"
                    " ORDER BY r.ts DESC LIMIT 1)"
                ).format(sid)
                return Expr("interval", first, bounds=(first, last))
            if prop.type == "null":
                return Expr("null", sql.SQL("NULL"))
            return Expr(prop.type, col)
        nav = ent.nav(head)
        if nav is None:
            names = ["id", *ent.props, *ent.navs]
            raise _err(
                f"{ent.name} has no property {head!r} (in '{text}'); its properties are: "
                + ", ".join(names)
            )
        if not rest:
            raise _err(
                f"'{text}' is an entity, not a value: name one of its properties, "
                f"e.g. {head}/id or {head}/name"
            )
        target = ENTITY_TYPES[nav.target]
        if target is OBSERVATION:
            raise _err(
                f"'{text}': conditions through Observations would read whole series; filter "
                "Observations directly instead, e.g. /Observations?$filter=Datastream/id eq '...'"
            )
        alias = self.ctx.alias()
        src = self.ctx.source(target.name)
        cond = sql.SQL("{}.{} = {}").format(
            sql.Identifier(alias), sql.Identifier(nav.child_col), scope.col(nav.parent_col)
        )
        inner_scope = Scope(target, alias)
        if bindings is not None:
            bindings.append(_Binding(src, alias, cond))
            return self.path(rest, inner_scope, bindings, text)
        if nav.many:
            raise _err(
                f"'{text}' goes through {head}, a collection: it has no single value to sort by"
            )
        inner = self.path(rest, inner_scope, None, text)

        def sub(x: sql.Composable) -> sql.Composable:
            return sql.SQL("(SELECT {} FROM ({}) {} WHERE {})").format(
                x, src, sql.Identifier(alias), cond
            )

        bounds = (sub(inner.bounds[0]), sub(inner.bounds[1])) if inner.bounds else None
        return Expr(inner.type, sub(inner.sql), bounds=bounds)

    # comparisons
    def compare(self, op: str, a: Expr, b: Expr) -> sql.Composable:
        if a.type == "null" or b.type == "null":
            other = b if a.type == "null" else a
            if op not in ("eq", "ne"):
                return sql.SQL("FALSE")
            if other.type == "null":
                return sql.SQL("TRUE" if op == "eq" else "FALSE")
            x = other.bounds[0] if other.bounds else other.sql
            return sql.SQL("({} IS NULL)" if op == "eq" else "({} IS NOT NULL)").format(x)
        if b.type == "interval" and a.type != "interval":
            return self.compare(_FLIP[op], b, a)
        if a.type == "interval":
            return self.interval_compare(op, a, b)
        if b.obs_id and not a.obs_id:
            return self.compare(_FLIP[op], b, a)
        if a.obs_id and b.is_const and isinstance(b.const, str) and op in ("eq", "ne"):
            return self.obs_id_compare(op, a, b.const)
        if b.type == "json" and a.type != "json":
            return self.compare(_FLIP[op], b, a)
        if a.type == "json":
            return self.json_compare(op, a, b)
        if {a.type, b.type} == {"number", "string"}:
            return self.number_string(op, a, b)
        if {a.type, b.type} == {"datetime", "string"} and (a.is_const or b.is_const):
            return self.datetime_string(op, a, b)
        if a.type != b.type:
            hint = ""
            if {a.type, b.type} == {"datetime", "date"}:
                hint = "; use date(...) on the date-time, or a date-time literal"
            raise _err(f"cannot compare {_TYPE_NAMES[a.type]} with {_TYPE_NAMES[b.type]}{hint}")
        if a.type == "geometry":
            raise _err("compare geometries with st_equals(a, b), not eq")
        left, right = a.sql, b.sql
        if a.type == "string":
            left = sql.SQL('{} COLLATE "C"').format(left)
        return sql.SQL("({} " + _SQL_OPS[op] + " {})").format(left, right)

    def interval_compare(self, op: str, a: Expr, b: Expr) -> sql.Composable:
        """An interval [start, end] against an instant: gt/ge on the start, lt/le on the end;
        eq holds when both ends equal it."""
        if b.type != "datetime":
            raise _err(f"a time interval compares with a date-time, not {_TYPE_NAMES[b.type]}")
        assert a.bounds is not None
        start, end = a.bounds
        if op == "eq":
            return sql.SQL("({s} = {t} AND {e} = {t})").format(s=start, e=end, t=b.sql)
        if op == "ne":
            return sql.SQL("(NOT coalesce({s} = {t} AND {e} = {t}, FALSE))").format(
                s=start, e=end, t=b.sql
            )
        side = start if op in ("gt", "ge") else end
        return sql.SQL("({} " + _SQL_OPS[op] + " {})").format(side, b.sql)

    def obs_id_compare(self, op: str, a: Expr, text: str) -> sql.Composable:
        parsed = ids.parse_observation_id(text)
        if parsed is None:
            return sql.SQL("FALSE" if op == "eq" else "TRUE")
        ds, ts = parsed
        assert a.id_parts is not None
        # Compare the parts, so the id's text is never built per row and the ts condition can
        # use the index.
        cond = sql.SQL("({} = {}::text AND {} = {}::timestamptz)").format(
            a.id_parts[0], self.p(ds), a.id_parts[1], self.p(ts)
        )
        return cond if op == "eq" else sql.SQL("(NOT {})").format(cond)

    def json_compare(self, op: str, a: Expr, b: Expr) -> sql.Composable:
        j = a.sql
        if b.type == "json":
            return sql.SQL("({} " + _SQL_OPS[op] + " {})").format(j, b.sql)
        typed = {
            "string": ("string", sql.SQL("({} #>> '{{}}')").format(j), 'COLLATE "C"'),
            "number": ("number", sql.SQL("({} #>> '{{}}')::float8").format(j), ""),
            "bool": ("boolean", sql.SQL("({} #>> '{{}}')::boolean").format(j), ""),
        }
        if b.type == "datetime":
            value = sql.SQL(
                "CASE WHEN jsonb_typeof({j}) = 'string' AND ({j} #>> '{{}}') ~ {pat}"
                " THEN ({j} #>> '{{}}')::timestamptz END"
            ).format(j=j, pat=self.p(_RFC3339_SQL))
            return sql.SQL("({} " + _SQL_OPS[op] + " {})").format(value, b.sql)
        if b.type not in typed:
            raise _err(f"cannot compare a JSON value with {_TYPE_NAMES[b.type]}")
        json_type, extract, collate = typed[b.type]
        value = sql.SQL("CASE WHEN jsonb_typeof({}) = {} THEN {} END").format(
            j, sql.Literal(json_type), extract
        )
        if collate:
            value = sql.SQL("{} " + collate).format(value)
        return sql.SQL("({} " + _SQL_OPS[op] + " {})").format(value, b.sql)

    def number_string(self, op: str, a: Expr, b: Expr) -> sql.Composable:
        num, text = (a, b) if a.type == "number" else (b, a)
        if num is b:
            op = _FLIP[op]
        if text.is_const:
            try:
                value = float(text.const)
            except ValueError:
                value = None
            if value is None or value != value or value in (float("inf"), float("-inf")):
                # A number is never equal to a text that is not a number.
                return sql.SQL("TRUE" if op == "ne" else "FALSE")
            return sql.SQL("({} " + _SQL_OPS[op] + " {}::float8)").format(num.sql, self.p(value))
        return sql.SQL('({}::text COLLATE "C" ' + _SQL_OPS[op] + " {})").format(num.sql, text.sql)

    def datetime_string(self, op: str, a: Expr, b: Expr) -> sql.Composable:
        dt, text = (a, b) if a.type == "datetime" else (b, a)
        if dt is b:
            op = _FLIP[op]
        parsed = _parse_rfc3339(text.const) if text.is_const else None
        if parsed is None:
            return sql.SQL("TRUE" if op == "ne" else "FALSE")
        return sql.SQL("({} " + _SQL_OPS[op] + " {}::timestamptz)").format(dt.sql, self.p(parsed))

    # arithmetic
    def arithmetic(self, op: str, a: Expr, b: Expr) -> Expr:
        # A JSON value (a sub-property) takes part in arithmetic as a number when it is one.
        if a.type == "json" and b.type in ("number", "json"):
            a = Expr("number", self.number(a, op))
        if b.type == "json" and a.type == "number":
            b = Expr("number", self.number(b, op))
        types = (a.type, b.type)
        if types == ("number", "number"):
            if op == "mod":
                return Expr("number", sql.SQL("mod({}::numeric, {}::numeric)").format(a.sql, b.sql))
            sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
            return Expr("number", sql.SQL("({} " + sym + " {})").format(a.sql, b.sql))
        result = {
            ("datetime", "duration", "add"): "datetime",
            ("duration", "datetime", "add"): "datetime",
            ("datetime", "duration", "sub"): "datetime",
            ("datetime", "datetime", "sub"): "duration",
            ("duration", "duration", "add"): "duration",
            ("duration", "duration", "sub"): "duration",
        }.get((*types, op))
        if result is None:
            raise _err(f"'{op}' is not defined for {_TYPE_NAMES[a.type]} and {_TYPE_NAMES[b.type]}")
        sym = "+" if op == "add" else "-"
        return Expr(result, sql.SQL("({} " + sym + " {})").format(a.sql, b.sql))

    # functions
    def text(self, e: Expr, fn: str) -> sql.Composable:
        if e.type == "string":
            return e.sql
        if e.type == "json":
            return sql.SQL("({} #>> '{{}}')").format(e.sql)
        if e.type in ("number", "null"):
            return sql.SQL("({})::text").format(e.sql)
        raise _err(f"{fn}() works on strings, not on {_TYPE_NAMES[e.type]}")

    def number(self, e: Expr, fn: str) -> sql.Composable:
        if e.type in ("number", "null"):
            return e.sql
        if e.type == "json":
            return sql.SQL(
                "CASE WHEN jsonb_typeof({j}) = 'number' THEN ({j} #>> '{{}}')::float8 END"
            ).format(j=e.sql)
        raise _err(f"{fn}() needs a number, not {_TYPE_NAMES[e.type]}")

    def instant(self, e: Expr, fn: str, allowed: tuple[str, ...]) -> tuple[str, sql.Composable]:
        if e.type == "datetime":
            return "datetime", sql.SQL("({} AT TIME ZONE 'UTC')").format(e.sql)
        if e.type in allowed:
            return e.type, e.sql
        want = " or ".join(_TYPE_NAMES[t] for t in ("datetime", *allowed))
        raise _err(f"{fn}() needs {want}, not {_TYPE_NAMES[e.type]}")

    def call(self, name: str, args: list[Expr], node: f.Call) -> Expr:
        S = sql.SQL
        if name in ("substringof", "contains", "endswith", "startswith", "indexof", "concat"):
            x, y = self.text(args[0], name), self.text(args[1], name)
            if name == "substringof":
                return Expr("bool", S("(strpos({}, {}) > 0)").format(y, x))
            if name == "contains":
                return Expr("bool", S("(strpos({}, {}) > 0)").format(x, y))
            if name == "endswith":
                return Expr("bool", S("(right({x}, char_length({y})) = {y})").format(x=x, y=y))
            if name == "startswith":
                return Expr("bool", S("starts_with({}, {})").format(x, y))
            if name == "indexof":
                return Expr("number", S("(strpos({}, {}) - 1)").format(x, y))
            return Expr("string", S("concat({}, {})").format(x, y))
        if name == "length":
            return Expr("number", S("char_length({})").format(self.text(args[0], name)))
        if name == "substring":
            s = self.text(args[0], name)
            start = S("({})::int + 1").format(self.number(args[1], name))
            if len(args) == 2:
                return Expr("string", S("substr({}, {})").format(s, start))
            n = S("({})::int").format(self.number(args[2], name))
            return Expr("string", S("substr({}, {}, {})").format(s, start, n))
        if name in ("tolower", "toupper", "trim"):
            sql_fn = {"tolower": "lower", "toupper": "upper", "trim": "btrim"}[name]
            return Expr("string", S(sql_fn + "({})").format(self.text(args[0], name)))
        if name in ("year", "month", "day"):
            _, x = self.instant(args[0], name, ("date",))
            return Expr("number", S("extract(" + name + " FROM {})::int").format(x))
        if name in ("hour", "minute"):
            _, x = self.instant(args[0], name, ("time",))
            return Expr("number", S("extract(" + name + " FROM {})::int").format(x))
        if name == "second":
            _, x = self.instant(args[0], name, ("time",))
            return Expr("number", S("floor(extract(second FROM {}))::int").format(x))
        if name == "fractionalseconds":
            _, x = self.instant(args[0], name, ("time",))
            return Expr(
                "number",
                S("(extract(second FROM {x}) - floor(extract(second FROM {x})))::float8").format(
                    x=x
                ),
            )
        if name == "date":
            _, x = self.instant(args[0], name, ())
            return Expr("date", S("({})::date").format(x))
        if name == "time":
            _, x = self.instant(args[0], name, ())
            return Expr("time", S("({})::time").format(x))
        if name == "totaloffsetminutes":
            self.instant(args[0], name, ())
            return Expr("number", S("0"), const=0)  # meetnet keeps every instant in UTC
        if name in ("now", "mindatetime", "maxdatetime"):
            instant = {
                "now": self.ctx.now,
                "mindatetime": MIN_DATETIME,
                "maxdatetime": MAX_DATETIME,
            }
            return Expr(
                "datetime", S("{}::timestamptz").format(self.p(instant[name])), const=instant[name]
            )
        if name in ("round", "floor", "ceiling"):
            x = self.number(args[0], name)
            fn = {
                "round": "round({}::numeric)::float8",
                "floor": "floor({})",
                "ceiling": "ceil({})",
            }
            return Expr("number", S(fn[name]).format(x))
        if name == "geo.length":
            g = args[0]
            if g.type != "geometry":
                raise _err("geo.length() needs a geometry")
            length = geo.length(g.geom) if g.geom is not None else 0.0
            return Expr("number", S("{}::float8").format(self.p(length)))
        if name == "geo.distance":
            return Expr("number", self.distance(args[0], args[1]))
        pattern = None
        if name == "st_relate":
            p = args[2]
            if not (p.is_const and isinstance(p.const, str)):
                raise _err(
                    "st_relate() takes the DE-9IM pattern as a string literal, e.g. 'T*F**F***'"
                )
            pattern = p.const
        return Expr("bool", self.spatial(name, args[0], args[1], pattern))

    def _geometries(self, fn: str, a: Expr, b: Expr) -> None:
        for e in (a, b):
            if e.type != "geometry":
                raise _err(
                    f"{fn}() compares geometries (location, feature, observedArea or a "
                    f"geography'...' literal), not {_TYPE_NAMES[e.type]}"
                )

    def spatial(self, name: str, a: Expr, b: Expr, pattern: str | None) -> sql.Composable:
        self._geometries(name, a, b)
        try:
            if a.geom is None and b.geom is None:  # two point columns
                results = geo.relate_for(name, geo.point(0.0, 0.0), True, pattern)
                equal = sql.SQL("({} ~= {})").format(a.sql, b.sql)
                return spatial.by_location(results, equal, spatial.FALSE)
            if a.geom is not None and b.geom is not None:
                value = _literal_relation(name, a.geom, b.geom, pattern)
                return sql.SQL("TRUE" if value else "FALSE")
            column, lit, point_first = (a, b, True) if b.geom is not None else (b, a, False)
            assert lit.geom is not None
            results = geo.relate_for(name, lit.geom, point_first, pattern)
        except geo.GeometryError as e:
            raise _err(str(e)) from None
        interior, boundary = spatial.location(column.sql, lit.geom, self.p)
        return spatial.by_location(results, interior, boundary)

    def distance(self, a: Expr, b: Expr) -> sql.Composable:
        self._geometries("geo.distance", a, b)
        if a.geom is None and b.geom is None:
            return sql.SQL("({} <-> {})").format(a.sql, b.sql)
        if a.geom is not None and b.geom is not None:
            for p, g in ((a.geom, b.geom), (b.geom, a.geom)):
                if p.kind == "Point":
                    return sql.SQL("{}::float8").format(self.p(geo.distance(p.parts[0][0], g)))
            raise _err("geo.distance() of two literals needs one of them to be a POINT")
        column, lit = (a, b) if b.geom is not None else (b, a)
        assert lit.geom is not None
        return spatial.distance(column.sql, lit.geom, self.p)


def _literal_relation(name: str, a: geo.Geometry, b: geo.Geometry, pattern: str | None) -> bool:
    if a.kind == "Point":
        return geo.relate_for(name, b, True, pattern)[geo.locate(a.parts[0][0], b)]
    if b.kind == "Point":
        return geo.relate_for(name, a, False, pattern)[geo.locate(b.parts[0][0], a)]
    raise geo.GeometryError(
        f"{name}() of two literals needs one of them to be a POINT (meetnet's geometries are "
        "points)"
    )


def _parse_rfc3339(text: Any) -> datetime | None:
    if not isinstance(text, str) or not _RFC3339.match(text.strip()):
        return None
    try:
        t = text.strip()
        frac = re.search(r"\.(\d+)", t)
        if frac and len(frac[1]) > 6:
            t = t.replace(frac[0], "." + frac[1][:6])
        return datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None

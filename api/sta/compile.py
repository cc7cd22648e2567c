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

from api.sta import filter as f
from api.sta import functions, ids, sources
from api.sta.model import ENTITY_TYPES, ID_NAMES, OBSERVATION, EntityType
from api.sta.types import TYPE_NAMES, CompileError, Expr, err
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
            raise err("$orderby cannot sort by a geometry; sort by geo.distance(...) instead")
        if e.type == "null":
            raise err("$orderby cannot sort by null")
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
            raise err(
                f"the expression is {TYPE_NAMES.get(e.type, e.type)}, not a condition: "
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
                    raise err("'not' needs a condition")
                return Expr("bool", sql.SQL("(NOT coalesce({}, FALSE))").format(e.sql))
            if e.type not in ("number", "duration"):
                raise err(f"'-' needs a number or a duration, not {TYPE_NAMES[e.type]}")
            return Expr(e.type, sql.SQL("(- {})").format(e.sql))
        assert isinstance(node, f.Binary)
        left = self.value(node.left, scope, bindings)
        right = self.value(node.right, scope, bindings)
        if node.op in f.COMPARISONS:
            return Expr("bool", self.compare(node.op, left, right))
        if node.op in f.LOGICAL:
            if left.type != "bool" or right.type != "bool":
                raise err(f"'{node.op}' joins conditions, not values")
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
                raise err(f"'{text}': an id has no sub-properties")
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
                raise err(f"'{text}': {ent.name}.{head} has no sub-properties")
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
            raise err(
                f"{ent.name} has no property {head!r} (in '{text}'); its properties are: "
                + ", ".join(names)
            )
        if not rest:
            raise err(
                f"'{text}' is an entity, not a value: name one of its properties, "
                f"e.g. {head}/id or {head}/name"
            )
        target = ENTITY_TYPES[nav.target]
        if target is OBSERVATION:
            raise err(
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
            raise err(
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
            raise err(f"cannot compare {TYPE_NAMES[a.type]} with {TYPE_NAMES[b.type]}{hint}")
        if a.type == "geometry":
            raise err("compare geometries with st_equals(a, b), not eq")
        left, right = a.sql, b.sql
        if a.type == "string":
            left = sql.SQL('{} COLLATE "C"').format(left)
        return sql.SQL("({} " + _SQL_OPS[op] + " {})").format(left, right)

    def interval_compare(self, op: str, a: Expr, b: Expr) -> sql.Composable:
        """An interval [start, end] against an instant: gt/ge on the start, lt/le on the end;
        eq holds when both ends equal it."""
        if b.type != "datetime":
            raise err(f"a time interval compares with a date-time, not {TYPE_NAMES[b.type]}")
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
            raise err(f"cannot compare a JSON value with {TYPE_NAMES[b.type]}")
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
            a = Expr("number", functions.number(self, a, op))
        if b.type == "json" and a.type == "number":
            b = Expr("number", functions.number(self, b, op))
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
            raise err(f"'{op}' is not defined for {TYPE_NAMES[a.type]} and {TYPE_NAMES[b.type]}")
        sym = "+" if op == "add" else "-"
        return Expr(result, sql.SQL("({} " + sym + " {})").format(a.sql, b.sql))

    def call(self, name: str, args: list[Expr], node: f.Call) -> Expr:
        return functions.call(self, name, args)


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


__all__ = ["CompileError", "Context", "Expr", "Scope", "condition", "const_datetime", "order_terms"]

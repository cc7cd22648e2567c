"""The expression language of SensorThings ``$filter`` and ``$orderby`` (OGC 18-088 §9.3.3.5,
a subset of OData 4.0 URL conventions): a hand-written lexer and recursive-descent parser that
turns the text into a small immutable AST. Nothing here touches SQL; ``api/sta/compile.py``
type-checks the AST and compiles it to SQL with bound parameters.

Grammar (lowest precedence first)::

    expr    := and ('or' and)*
    and     := not ('and' not)*
    not     := 'not' not | cmp
    cmp     := add (('eq'|'ne'|'gt'|'ge'|'lt'|'le') add)*
    add     := mul (('add'|'sub') mul)*
    mul     := unary (('mul'|'div'|'mod') unary)*
    unary   := '-' unary | primary
    primary := '(' expr ')' | literal | name '(' [expr (',' expr)*] ')' | path
    path    := segment ('/' segment)*

``not`` applies to a whole comparison (``not name eq 'x'`` is ``not (name eq 'x')``), the only
reading that type-checks. Literals: ``'text'`` (``''`` escapes a quote), numbers, ``true``,
``false``, ``null``, date-times ``2026-11-29T19:00:00Z`` (an offset is required; a ``+`` that
arrived as a space is read as ``+``), dates ``2026-11-29``, times ``19:00:00``,
``duration'P1DT2H'`` and geometries ``geography'POINT(3.72 51.05)'`` (also ``geometry'...'``,
WKT in WGS84 lon/lat, ``SRID=4326;`` allowed).

Every limit is explicit: the text length, the nesting depth and the number of nodes, so no
input can exhaust the stack or the planner. Errors are :class:`FilterError` with the position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from api.sta import geo

MAX_LENGTH = 8000  # characters of one $filter or $orderby
MAX_DEPTH = 40  # nesting of parentheses, functions and operators
MAX_NODES = 400


class FilterError(ValueError):
    """A malformed expression; ``str(e)`` says what and where (0-based character position)."""

    def __init__(self, message: str, pos: int | None = None) -> None:
        super().__init__(message if pos is None else f"{message} (at character {pos + 1})")
        self.pos = pos


# --- AST ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Literal:
    value: Any  # str, int, float, bool, None, datetime, date, time, timedelta, geo.Geometry
    kind: str  # string number bool null datetime date time duration geometry


@dataclass(frozen=True, slots=True)
class Path:
    segments: tuple[str, ...]

    def __str__(self) -> str:
        return "/".join(self.segments)


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "not" | "neg"
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # eq ne gt ge lt le and or add sub mul div mod
    left: Node
    right: Node


Node = Literal | Path | Call | Unary | Binary

COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
ARITHMETIC = frozenset({"add", "sub", "mul", "div", "mod"})
LOGICAL = frozenset({"and", "or"})

# Built-in functions of OGC 18-088 Table 24 (and OData's `contains`): name -> allowed arities.
FUNCTIONS: dict[str, tuple[int, ...]] = {
    # strings
    "substringof": (2,),
    "contains": (2,),
    "endswith": (2,),
    "startswith": (2,),
    "length": (1,),
    "indexof": (2,),
    "substring": (2, 3),
    "tolower": (1,),
    "toupper": (1,),
    "trim": (1,),
    "concat": (2,),
    # dates and times
    "year": (1,),
    "month": (1,),
    "day": (1,),
    "hour": (1,),
    "minute": (1,),
    "second": (1,),
    "fractionalseconds": (1,),
    "date": (1,),
    "time": (1,),
    "totaloffsetminutes": (1,),
    "now": (0,),
    "mindatetime": (0,),
    "maxdatetime": (0,),
    # numbers
    "round": (1,),
    "floor": (1,),
    "ceiling": (1,),
    # geometry
    "geo.distance": (2,),
    "geo.length": (1,),
    "geo.intersects": (2,),
    "st_equals": (2,),
    "st_disjoint": (2,),
    "st_touches": (2,),
    "st_within": (2,),
    "st_overlaps": (2,),
    "st_crosses": (2,),
    "st_intersects": (2,),
    "st_contains": (2,),
    "st_relate": (3,),
}

# --- lexer ----------------------------------------------------------------------------------
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?"
    r"(Z|z|[+-]\d{2}:\d{2}| \d{2}:\d{2}(?![\d:]))?"
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?![\dT:])")
_TIME = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(?![\d:])")
_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?(?![\w.])")
_NAME = re.compile(r"[A-Za-z_@$][A-Za-z0-9_.@$-]*")
_DURATION = re.compile(
    r"^-?P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)
KEYWORDS = COMPARISONS | ARITHMETIC | LOGICAL | {"not", "true", "false", "null", "asc", "desc"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # op ( ) , / literal name end
    value: Any
    pos: int


def _fraction_us(frac: str | None) -> int:
    return int((frac or ".0")[1:7].ljust(6, "0"))


def _datetime(m: re.Match[str], pos: int) -> datetime:
    year, month, day, hour, minute = (int(m[i]) for i in range(1, 6))
    second = int(m[6] or 0)
    offset = m[8]
    if offset is None:
        raise FilterError(
            "a date-time literal needs a UTC offset (Z or +01:00, with '+' URL-encoded as %2B)",
            pos,
        )
    try:
        tz = UTC
        if offset not in ("Z", "z"):
            sign = -1 if offset[0] == "-" else 1
            hh, mm = int(offset[1:3]), int(offset[4:6])
            if hh > 23 or mm > 59:
                raise ValueError("offset out of range")
            from datetime import timezone

            tz = timezone(sign * timedelta(hours=hh, minutes=mm))
        value = datetime(year, month, day, hour, minute, second, _fraction_us(m[7]), tz)
        return value.astimezone(UTC)
    except (ValueError, OverflowError) as e:
        raise FilterError(f"invalid date-time {m[0]!r}: {e}", pos) from None


def _duration(text: str, pos: int) -> timedelta:
    m = _DURATION.match(text)
    if m is None or text.rstrip("-") in ("P", "PT") or text.endswith("T"):
        raise FilterError(
            f"invalid duration {text!r}: expected ISO 8601 like P1D, PT2H30M, P1DT12H, PT0.5S "
            "(days, hours, minutes and seconds; months and years have no fixed length)",
            pos,
        )
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    try:
        value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        raise FilterError(f"duration {text!r} is too long", pos) from None
    return -value if text.startswith("-") else value


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise FilterError(f"the expression is {len(text)} characters long; at most {MAX_LENGTH}")
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c in "(),/":
            out.append(Token(c, c, i))
            i += 1
            continue
        if c == "'":
            value, i = _string(text, i)
            out.append(Token("literal", Literal(value, "string"), i))
            continue
        if c == "-" and i + 1 < n and text[i + 1].isdigit() and not _ends_operand(out):
            m = _NUMBER.match(text, i + 1)
            if m is not None and not _DATE.match(text, i + 1) and not _DATETIME.match(text, i + 1):
                out.append(Token("literal", Literal(_number("-" + m[0], i), "number"), i))
                i = m.end()
                continue
        if c == "-":
            out.append(Token("op", "neg", i))
            i += 1
            continue
        if c.isdigit():
            tok, i = _digits(text, i)
            out.append(tok)
            continue
        m = _NAME.match(text, i)
        if m is None:
            raise FilterError(f"unexpected character {c!r}", i)
        word, end = m[0], m.end()
        if end < n and text[end] == "'" and word in ("duration", "geography", "geometry"):
            body, after = _string(text, end)
            if word == "duration":
                lit = Literal(_duration(body, i), "duration")
            else:
                try:
                    lit = Literal(geo.parse_wkt(body), "geometry")
                except geo.GeometryError as e:
                    raise FilterError(f"invalid {word} literal: {e}", i) from None
            out.append(Token("literal", lit, i))
            i = after
            continue
        if end < n and text[end] == "'":
            raise FilterError(
                f"unknown typed literal {word}'...': use duration'...', geography'...'", i
            )
        if word in ("true", "false"):
            out.append(Token("literal", Literal(word == "true", "bool"), i))
        elif word == "null":
            out.append(Token("literal", Literal(None, "null"), i))
        elif word in KEYWORDS:
            out.append(Token("op", word, i))
        else:
            out.append(Token("name", word, i))
        i = end
    out.append(Token("end", None, n))
    return out


def _ends_operand(tokens: list[Token]) -> bool:
    """Whether the previous token ends an operand (then '-' would be subtraction, which OData
    spells `sub`, so it is a syntax error either way; a negative literal needs an operator or
    '(' before it)."""
    if not tokens:
        return False
    last = tokens[-1]
    return last.kind in ("literal", "name", ")")


def _string(text: str, i: int) -> tuple[str, int]:
    """A quoted string starting at text[i] == "'": (its value, the index after it)."""
    j, parts = i + 1, []
    while True:
        k = text.find("'", j)
        if k < 0:
            raise FilterError("unterminated string: a quote (') is missing", i)
        parts.append(text[j:k])
        if k + 1 < len(text) and text[k + 1] == "'":
            parts.append("'")
            j = k + 2
            continue
        return "".join(parts), k + 1


def _number(text: str, pos: int) -> int | float:
    try:
        if re.fullmatch(r"-?\d+", text):
            value = int(text)
            if abs(value) > 2**63 - 1:
                raise FilterError(f"integer {text} is out of range", pos)
            return value
        f = float(text)
    except ValueError:
        raise FilterError(f"invalid number {text!r}", pos) from None
    if f != f or f in (float("inf"), float("-inf")):
        raise FilterError(f"number {text!r} is out of range", pos)
    return f


def _digits(text: str, i: int) -> tuple[Token, int]:
    m = _DATETIME.match(text, i)
    if m is not None:
        return Token("literal", Literal(_datetime(m, i), "datetime"), i), m.end()
    m = _DATE.match(text, i)
    if m is not None:
        try:
            value = date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError as e:
            raise FilterError(f"invalid date {m[0]!r}: {e}", i) from None
        return Token("literal", Literal(value, "date"), i), m.end()
    m = _TIME.match(text, i)
    if m is not None:
        try:
            t = time(int(m[1]), int(m[2]), int(m[3] or 0), _fraction_us(m[4]))
        except ValueError as e:
            raise FilterError(f"invalid time {m[0]!r}: {e}", i) from None
        return Token("literal", Literal(t, "time"), i), m.end()
    m = _NUMBER.match(text, i)
    if m is None:
        raise FilterError(f"invalid number starting with {text[i : i + 12]!r}", i)
    return Token("literal", Literal(_number(m[0], i), "number"), i), m.end()


# --- parser ---------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.nodes = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def expect(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            raise FilterError(f"expected {what}, found {_describe(self.tok)}", self.tok.pos)
        return self.take()

    def node(self, n: Node, pos: int) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(f"the expression has more than {MAX_NODES} parts; simplify it", pos)
        return n

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"the expression is nested deeper than {MAX_DEPTH} levels", pos)

    def leave(self) -> None:
        self.depth -= 1

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.value in ops

    def expr(self) -> Node:
        self.enter(self.tok.pos)
        left = self.conj()
        while self.is_op("or"):
            pos = self.take().pos
            left = self.node(Binary("or", left, self.conj()), pos)
        self.leave()
        return left

    def conj(self) -> Node:
        left = self.negation()
        while self.is_op("and"):
            pos = self.take().pos
            left = self.node(Binary("and", left, self.negation()), pos)
        return left

    def negation(self) -> Node:
        if self.is_op("not"):
            pos = self.take().pos
            self.enter(pos)
            operand = self.negation()
            self.leave()
            return self.node(Unary("not", operand), pos)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.additive()
        while self.tok.kind == "op" and self.tok.value in COMPARISONS:
            t = self.take()
            left = self.node(Binary(t.value, left, self.additive()), t.pos)
        return left

    def additive(self) -> Node:
        left = self.multiplicative()
        while self.is_op("add", "sub"):
            t = self.take()
            left = self.node(Binary(t.value, left, self.multiplicative()), t.pos)
        return left

    def multiplicative(self) -> Node:
        left = self.unary()
        while self.is_op("mul", "div", "mod"):
            t = self.take()
            left = self.node(Binary(t.value, left, self.unary()), t.pos)
        return left

    def unary(self) -> Node:
        if self.is_op("neg"):
            pos = self.take().pos
            self.enter(pos)
            operand = self.unary()
            self.leave()
            return self.node(Unary("neg", operand), pos)
        return self.primary()

    def primary(self) -> Node:
        t = self.tok
        if t.kind == "(":
            self.take()
            inner = self.expr()
            self.expect(")", "')'")
            return inner
        if t.kind == "literal":
            self.take()
            return self.node(t.value, t.pos)
        if t.kind == "name":
            self.take()
            if self.tok.kind == "(":
                return self.call(t)
            segments = [t.value]
            while self.tok.kind == "/":
                self.take()
                seg = self.expect("name", "a property name after '/'")
                segments.append(seg.value)
            return self.node(Path(tuple(segments)), t.pos)
        raise FilterError(f"expected a value, property or function, found {_describe(t)}", t.pos)

    def call(self, name_tok: Token) -> Node:
        name = name_tok.value
        arities = FUNCTIONS.get(name.lower()) if name.lower() == name else None
        if arities is None:
            known = ", ".join(sorted(FUNCTIONS))
            raise FilterError(
                f"unknown function {name!r}; the functions are: {known}", name_tok.pos
            )
        self.expect("(", "'('")
        self.enter(name_tok.pos)
        args: list[Node] = []
        if self.tok.kind != ")":
            args.append(self.expr())
            while self.tok.kind == ",":
                self.take()
                args.append(self.expr())
        self.expect(")", "')' or ','")
        self.leave()
        if len(args) not in arities:
            want = " or ".join(str(a) for a in arities)
            raise FilterError(f"{name}() takes {want} argument(s), {len(args)} given", name_tok.pos)
        return self.node(Call(name, tuple(args)), name_tok.pos)


def _describe(t: Token) -> str:
    if t.kind == "end":
        return "the end of the expression"
    if t.kind == "literal":
        return f"the value {t.value.value!r}"
    if t.kind in ("op", "name"):
        return f"{t.value!r}"
    return f"{t.kind!r}"


def parse(text: str) -> Node:
    """Parse a ``$filter`` expression; raise :class:`FilterError`."""
    if not text.strip():
        raise FilterError("the expression is empty")
    p = _Parser(text)
    node = p.expr()
    if p.tok.kind != "end":
        raise FilterError(
            f"{_describe(p.tok)} is unexpected after a complete expression (missing 'and'/'or'?)",
            p.tok.pos,
        )
    return node


@dataclass(frozen=True, slots=True)
class OrderItem:
    expr: Node
    descending: bool


def parse_orderby(text: str) -> list[OrderItem]:
    """Parse ``$orderby``: ``expr [asc|desc] (, expr [asc|desc])*``."""
    if not text.strip():
        raise FilterError("$orderby is empty")
    p = _Parser(text)
    items: list[OrderItem] = []
    while True:
        expr = p.expr()
        desc = False
        if p.is_op("asc", "desc"):
            desc = p.take().value == "desc"
        items.append(OrderItem(expr, desc))
        if p.tok.kind == ",":
            p.take()
            continue
        if p.tok.kind != "end":
            raise FilterError(f"expected ',', 'asc' or 'desc', found {_describe(p.tok)}", p.tok.pos)
        return items


def conjuncts(node: Node) -> list[Node]:
    """The top-level AND terms of an expression."""
    if isinstance(node, Binary) and node.op == "and":
        return conjuncts(node.left) + conjuncts(node.right)
    return [node]


def paths(node: Node) -> list[Path]:
    """Every property path used in an expression."""
    if isinstance(node, Path):
        return [node]
    if isinstance(node, Call):
        return [p for a in node.args for p in paths(a)]
    if isinstance(node, Unary):
        return paths(node.operand)
    if isinstance(node, Binary):
        return paths(node.left) + paths(node.right)
    return []

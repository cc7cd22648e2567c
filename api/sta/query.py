"""System query options of OGC 18-088 §9.3: ``$top $skip $count $orderby $select $expand
$filter $resultFormat`` (and ``$skiptoken``, the opaque position in our ``@iot.nextLink``),
parsed and checked against the entity model, with every limit explicit:

* ``$top`` at most ``MEETNET_STA_MAX_TOP``; the default ``MEETNET_STA_DEFAULT_TOP``;
* ``$expand`` at most ``MEETNET_STA_MAX_EXPAND_DEPTH`` levels deep;
* at most ``MEETNET_STA_MAX_ENTITIES`` entities in one response, counted before any query
  runs as the product of the ``$top`` of each level. An explicit ``$top`` that does not fit is
  a 400; the default ``$top`` of an expanded collection shrinks instead (its
  ``...@iot.nextLink`` leads to the rest).

OData options meetnet does not implement (``$search``, ``$apply``, ...) answer 501 Not
Implemented, as the standard requires; unknown ``$`` options 400. Other parameters are ignored
(OData custom query options).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from api.sta import filter as f
from api.sta.errors import StaError, bad_request, not_implemented
from api.sta.model import ENTITY_TYPES, ID_NAMES, EntityType

KNOWN = ("$top", "$skip", "$count", "$orderby", "$select", "$expand", "$filter")
TOP_LEVEL_ONLY = ("$resultFormat", "$skiptoken")
NOT_IMPLEMENTED = (
    "$search",
    "$apply",
    "$compute",
    "$format",
    "$levels",
    "$index",
    "$schemaversion",
    "$deltatoken",
    "$id",
)
MAX_EXPAND_ITEMS = 20  # navigation properties expanded at one level


@dataclass
class Page:
    """One page of a collection: its entities (rows of the source), the total count when
    asked, and whether and where it continues (registry sets by $skip, Observations by
    position)."""

    rows: list[dict[str, Any]]
    count: int | None = None
    more: bool = False
    next_token: str | None = None  # Observations: the keyset position ($skiptoken)
    skip_left: int = 0  # Observations: $skip not used up when the budget ended a page early


@dataclass(frozen=True)
class Limits:
    default_top: int
    max_top: int
    max_skip: int
    max_depth: int
    max_entities: int


@dataclass
class Options:
    top: int | None = None  # explicit $top
    skip: int = 0
    count: bool = False
    orderby: list[f.OrderItem] = field(default_factory=list)
    orderby_text: str | None = None
    select: list[str] | None = None
    filter: f.Node | None = None
    filter_text: str | None = None
    expand: list[Expand] = field(default_factory=list)
    result_format: str | None = None
    skiptoken: str | None = None
    effective_top: int = 0  # set by plan()

    def raw(self) -> dict[str, str]:
        """The options as query parameters (for next links), without paging state."""
        out: dict[str, str] = {}
        if self.filter_text is not None:
            out["$filter"] = self.filter_text
        if self.orderby_text is not None:
            out["$orderby"] = self.orderby_text
        if self.select is not None:
            out["$select"] = ",".join(self.select)
        if self.count:
            out["$count"] = "true"
        if self.expand:
            out["$expand"] = ",".join(e.text() for e in self.expand)
        if self.result_format:
            out["$resultFormat"] = self.result_format
        return out


@dataclass
class Expand:
    nav: str
    options: Options
    option_text: dict[str, str] = field(default_factory=dict)
    many: bool = True  # set by check()
    target: str = ""  # entity type name, set by check()

    def text(self) -> str:
        inner = ";".join(f"{k}={v}" for k, v in self.option_text.items())
        nested = ",".join(e.text() for e in self.options.expand)
        if nested and "$expand" not in self.option_text:
            inner = ";".join(x for x in (inner, f"$expand={nested}") if x)
        return f"{self.nav}({inner})" if inner else self.nav


def _int(name: str, text: str, limits: Limits) -> int:
    t = text.strip()
    if not t.isdigit():
        raise bad_request(f"{name} must be a non-negative integer, not {text!r}")
    value = int(t)
    if name == "$top" and value > limits.max_top:
        raise bad_request(
            f"$top may be at most {limits.max_top}; page with the @iot.nextLink of the response "
            "for more"
        )
    if value > 2**31:
        raise bad_request(f"{name} {value} is out of range")
    return value


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses and quotes."""
    out, depth, start, quoted = [], 0, 0, False
    for i, c in enumerate(text):
        if c == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise bad_request(f"unbalanced parentheses in {text!r}")
        elif c == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
    if depth != 0 or quoted:
        raise bad_request(f"unbalanced parentheses or quotes in {text!r}")
    out.append(text[start:])
    return out


def parse(params: dict[str, str], limits: Limits, *, top_level: bool = True) -> Options:
    opts = Options()
    for name, value in params.items():
        if name in NOT_IMPLEMENTED:
            raise not_implemented(f"the query option {name} is not implemented by this service")
        if name not in KNOWN and not (top_level and name in TOP_LEVEL_ONLY):
            if name.startswith("$"):
                allowed = ", ".join(KNOWN + (TOP_LEVEL_ONLY if top_level else ()))
                raise bad_request(f"unknown query option {name}; the options are: {allowed}")
            continue
        try:
            _apply(opts, name, value, limits)
        except f.FilterError as e:
            raise bad_request(f"{name}: {e}") from None
    return opts


def _apply(opts: Options, name: str, value: str, limits: Limits) -> None:
    if name == "$top":
        opts.top = _int(name, value, limits)
    elif name == "$skip":
        opts.skip = _int(name, value, limits)
    elif name == "$count":
        if value not in ("true", "false"):
            raise bad_request(f"$count must be true or false, not {value!r}")
        opts.count = value == "true"
    elif name == "$filter":
        opts.filter = f.parse(value)
        opts.filter_text = value
    elif name == "$orderby":
        opts.orderby = f.parse_orderby(value)
        opts.orderby_text = value
    elif name == "$select":
        names = [s.strip() for s in value.split(",")]
        if not all(names):
            raise bad_request(f"$select lists property names separated by commas, not {value!r}")
        opts.select = names
    elif name == "$expand":
        opts.expand = parse_expand(value, limits, depth=1)
    elif name == "$resultFormat":
        if value != "dataArray":
            raise bad_request(f"$resultFormat supports only dataArray, not {value!r}")
        opts.result_format = value
    elif name == "$skiptoken":
        opts.skiptoken = value


def parse_expand(text: str, limits: Limits, depth: int) -> list[Expand]:
    if depth > limits.max_depth:
        raise bad_request(
            f"$expand may nest at most {limits.max_depth} levels deep; request the deeper "
            "entities through their own URLs"
        )
    items = [i.strip() for i in _split(text, ",")]
    if not all(items):
        raise bad_request(f"$expand has an empty item: {text!r}")
    if len(items) > MAX_EXPAND_ITEMS:
        raise bad_request(f"$expand may name at most {MAX_EXPAND_ITEMS} items at one level")
    out: list[Expand] = []
    for item in items:
        path, sep, rest = item.partition("(")
        segments = [s.strip() for s in path.split("/")]
        if not all(segments):
            raise bad_request(f"malformed $expand item {item!r}")
        if len(segments) + depth - 1 > limits.max_depth:
            raise bad_request(
                f"$expand may nest at most {limits.max_depth} levels deep ({item!r} is deeper)"
            )
        option_text: dict[str, str] = {}
        if sep:
            if not rest.endswith(")"):
                raise bad_request(f"malformed $expand item {item!r}: a ')' is missing")
            for part in _split(rest[:-1], ";"):
                part = part.strip()
                if not part:
                    continue
                key, eq, val = part.partition("=")
                if not eq or not key.startswith("$"):
                    raise bad_request(f"malformed option {part!r} in $expand: expected $name=value")
                if key in option_text:
                    raise bad_request(f"{key} appears twice in $expand item {item!r}")
                option_text[key.strip()] = val
        inner = parse(
            {k: v for k, v in option_text.items() if k != "$expand"}, limits, top_level=False
        )
        if "$expand" in option_text:
            inner.expand = parse_expand(option_text["$expand"], limits, depth + len(segments))
        # a/b/c(options) is a(expand b(expand c(options)))
        node = Expand(segments[-1], inner, option_text)
        for seg in reversed(segments[:-1]):
            node = Expand(seg, Options(expand=[node]))
        _merge(out, node)
    return out


def _merge(items: list[Expand], new: Expand) -> None:
    for existing in items:
        if existing.nav == new.nav:
            if new.option_text and existing.option_text and new.option_text != existing.option_text:
                raise bad_request(f"$expand names {new.nav} twice with different options")
            if new.option_text and not existing.option_text:
                existing.option_text = new.option_text
                kept = existing.options.expand
                existing.options = replace(new.options, expand=kept)
                for e in new.options.expand:
                    _merge(existing.options.expand, e)
                return
            for e in new.options.expand:
                _merge(existing.options.expand, e)
            return
    items.append(new)


def check(entity: EntityType, opts: Options) -> None:
    """Names in $select and $expand exist on ``entity`` (recursively)."""
    if opts.select is not None:
        allowed = {*ID_NAMES, "@iot.selfLink", *entity.props, *entity.navs}
        for name in opts.select:
            if name not in allowed:
                raise bad_request(
                    f"$select: {entity.name} has no property {name!r}; it has: "
                    + ", ".join(["id", "@iot.selfLink", *entity.props, *entity.navs])
                )
    for e in opts.expand:
        nav = entity.navs.get(e.nav)
        if nav is None:
            raise bad_request(
                f"$expand: {entity.name} has no navigation property {e.nav!r}; it has: "
                + ", ".join(entity.navs)
            )
        target = ENTITY_TYPES[nav.target]
        e.many, e.target = nav.many, nav.target
        if not nav.many and (e.options.top is not None or e.options.skip or e.options.orderby):
            raise bad_request(
                f"$expand: {e.nav} is a single entity; $top, $skip, $orderby do not apply"
            )
        check(target, e.options)


def plan(opts: Options, limits: Limits, many: bool = True) -> None:
    """Set ``effective_top`` at every level so that the response holds at most
    ``limits.max_entities`` entities (see the module's docstring). Call after :func:`check`,
    which records which expanded navigation properties are collections."""

    def tops(o: Options, is_many: bool) -> None:
        if not is_many:
            o.effective_top = 1
        else:
            o.effective_top = o.top if o.top is not None else limits.default_top
        for e in o.expand:
            tops(e.options, e.many)

    tops(opts, many)

    def bound(o: Options) -> int:
        return o.effective_top * (1 + sum(bound(e.options) for e in o.expand))

    def shrinkable(o: Options) -> list[Options]:
        out = []
        for e in o.expand:
            out += shrinkable(e.options)
            if e.many and e.options.top is None and e.options.effective_top > 1:
                out.append(e.options)
        return out

    while bound(opts) > limits.max_entities:
        candidates = shrinkable(opts)
        if not candidates:
            raise StaError(
                400,
                f"this request could return up to {bound(opts)} entities; a response holds "
                f"at most {limits.max_entities}: lower $top (also inside $expand)",
            )
        candidates[0].effective_top = max(1, candidates[0].effective_top // 2)

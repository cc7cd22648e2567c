"""Geometry for the SensorThings spatial functions, without PostGIS.

Every geometry meetnet stores is a point (a sensor's WGS84 lon/lat): Locations, Features of
Interest and a Datastream's observedArea. So each spatial function compares a *point* with
either another point or a WKT literal (POINT, LINESTRING, POLYGON with holes, and their MULTI
forms). For a point P and a geometry G, the whole DE-9IM matrix of (P, G) follows from one fact:
whether P lies in G's interior, on its boundary, or outside. :func:`relate_for` computes, in
Python, the matrix for each of the three cases; the SQL then only decides which case holds,
with PostgreSQL's built-in geometric operators (``point <@ polygon``, ``point <@ path``,
``~=``, ``<->``; tolerance 1e-6 degrees, PostgreSQL's ``EPSILON``). Every named predicate
(``st_within`` ...) is its DE-9IM pattern (OGC 06-103r4, §6.1.14), so they are all consistent.

Why not PostGIS: it would be one more extension to build and preload on every machine
(Debian 12's postgresql-15-postgis-3 pulls GEOS, PROJ and GDAL), for point-in-geometry tests
that the built-in types answer; a deployment with PostGIS loses nothing. Coordinates are
planar lon/lat degrees, as PostGIS ``geometry(4326)`` treats them (``geo.distance`` is in
degrees).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

Coord = tuple[float, float]


class GeometryError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Geometry:
    """``kind``: Point, LineString, Polygon, MultiPoint, MultiLineString or MultiPolygon.
    ``parts`` holds, per part: a point ``[(x, y)]``, a line ``[(x, y), ...]`` or a polygon
    ``[[ring], [hole], ...]`` (rings closed: first == last)."""

    kind: str
    parts: tuple[tuple, ...]

    @property
    def dimension(self) -> int:
        return {"Point": 0, "LineString": 1, "Polygon": 2}[self.base]

    @property
    def base(self) -> str:
        return self.kind.removeprefix("Multi")

    def points(self) -> list[Coord]:
        if self.base == "Point":
            return [p[0] for p in self.parts]
        if self.base == "LineString":
            return [c for line in self.parts for c in line]
        return [c for poly in self.parts for ring in poly for c in ring]


MAX_POSITIONS = 10_000  # coordinates in one literal

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_COORD = re.compile(rf"\s*({_NUM})\s+({_NUM})(?:\s+{_NUM})?\s*")


def parse_wkt(text: str) -> Geometry:
    """WKT (lon lat order, optional ``SRID=4326;`` prefix and Z values) -> Geometry."""
    body = text.strip()
    m = re.match(r"(?i)SRID=(\d+);", body)
    if m:
        if m[1] != "4326":
            raise GeometryError(f"only SRID 4326 (WGS84 lon/lat) is supported, not {m[1]}")
        body = body[m.end() :].strip()
    m = re.match(
        r"(?i)(MULTIPOINT|MULTILINESTRING|MULTIPOLYGON|POINT|LINESTRING|POLYGON)\s*(Z\s*)?", body
    )
    if m is None:
        raise GeometryError(
            "expected POINT, LINESTRING, POLYGON, MULTIPOINT, MULTILINESTRING or MULTIPOLYGON "
            f"in WKT, e.g. POINT(3.72 51.05); got {text[:40]!r}"
        )
    kind = {
        "POINT": "Point",
        "LINESTRING": "LineString",
        "POLYGON": "Polygon",
        "MULTIPOINT": "MultiPoint",
        "MULTILINESTRING": "MultiLineString",
        "MULTIPOLYGON": "MultiPolygon",
    }[m[1].upper()]
    rest = body[m.end() :]
    tree, end = _nested(rest, 0)
    if rest[end:].strip():
        raise GeometryError(f"unexpected text after the geometry: {rest[end:][:20]!r}")
    g = _build(kind, tree)
    if len(g.points()) > MAX_POSITIONS:
        raise GeometryError(f"a geometry literal may have at most {MAX_POSITIONS} positions")
    return g


def _nested(s: str, i: int) -> tuple[list, int]:
    """Parse '( ... )' into nested lists of coordinate strings."""
    while i < len(s) and s[i].isspace():
        i += 1
    if i >= len(s) or s[i] != "(":
        raise GeometryError("expected '(' in WKT")
    i += 1
    items: list = []
    depth_guard = 0
    while True:
        while i < len(s) and s[i].isspace():
            i += 1
        if i < len(s) and s[i] == "(":
            depth_guard += 1
            if depth_guard > MAX_POSITIONS:
                raise GeometryError("too many parts in WKT")
            sub, i = _nested(s, i)
            items.append(sub)
        else:
            j = i
            while j < len(s) and s[j] not in ",()":
                j += 1
            items.append(s[i:j])
            i = j
        while i < len(s) and s[i].isspace():
            i += 1
        if i < len(s) and s[i] == ",":
            i += 1
            continue
        if i < len(s) and s[i] == ")":
            return items, i + 1
        raise GeometryError("unbalanced parentheses in WKT")


def _coord(text: object) -> Coord:
    if not isinstance(text, str):
        raise GeometryError("expected a coordinate 'x y'")
    m = _COORD.fullmatch(text)
    if m is None:
        raise GeometryError(f"invalid coordinate {text.strip()!r}: expected 'lon lat'")
    x, y = float(m[1]), float(m[2])
    if not (-180 <= x <= 180 and -90 <= y <= 90):
        raise GeometryError(f"coordinate ({x} {y}) is outside WGS84 (lon -180..180, lat -90..90)")
    return (x, y)


def _line(items: list, closed: bool) -> tuple[Coord, ...]:
    coords = tuple(_coord(t) for t in items)
    if closed:
        if len(coords) < 4 or coords[0] != coords[-1]:
            raise GeometryError(
                "a polygon ring needs at least 4 positions, the last equal to the first"
            )
    elif len(coords) < 2:
        raise GeometryError("a linestring needs at least 2 positions")
    return coords


def _polygon(items: list) -> tuple[tuple[Coord, ...], ...]:
    if not items or not all(isinstance(r, list) for r in items):
        raise GeometryError("a polygon is a list of rings: POLYGON((x y, ...), (hole ...))")
    return tuple(_line(r, closed=True) for r in items)


def _build(kind: str, tree: list) -> Geometry:
    if kind == "Point":
        if len(tree) != 1:
            raise GeometryError("a point has exactly one position: POINT(lon lat)")
        return Geometry(kind, (((_coord(tree[0]),)),))
    if kind == "LineString":
        return Geometry(kind, (_line(tree, closed=False),))
    if kind == "Polygon":
        return Geometry(kind, (_polygon(tree),))
    if kind == "MultiPoint":
        pts = tuple((_coord(t[0] if isinstance(t, list) and len(t) == 1 else t),) for t in tree)
        return Geometry(kind, pts)
    if kind == "MultiLineString":
        if not all(isinstance(t, list) for t in tree):
            raise GeometryError("MULTILINESTRING((x y, ...), (x y, ...))")
        return Geometry(kind, tuple(_line(t, closed=False) for t in tree))
    if not all(isinstance(t, list) for t in tree):
        raise GeometryError("MULTIPOLYGON(((x y, ...)), ((x y, ...)))")
    return Geometry(kind, tuple(_polygon(t) for t in tree))


def point(lon: float, lat: float) -> Geometry:
    return Geometry("Point", (((lon, lat),),))


def wkt(g: Geometry) -> str:
    def c(p: Coord) -> str:
        return f"{p[0]!r} {p[1]!r}"

    if g.kind == "Point":
        return f"POINT({c(g.parts[0][0])})"
    if g.kind == "LineString":
        return "LINESTRING(" + ", ".join(c(p) for p in g.parts[0]) + ")"
    if g.kind == "Polygon":
        return (
            "POLYGON(" + ", ".join("(" + ", ".join(c(p) for p in r) + ")" for r in g.parts[0]) + ")"
        )
    raise GeometryError(f"no WKT writer for {g.kind}")


# --- DE-9IM of a point against a geometry -------------------------------------------------
# Location of a point relative to a geometry: in its Interior, on its Boundary, or Exterior.
LOCATIONS = ("I", "B", "E")


def _boundary_dim(g: Geometry) -> str:
    """Dimension of G's boundary as a DE-9IM character ('F' when empty)."""
    if g.base == "Point":
        return "F"
    if g.base == "LineString":
        return "F" if all(line[0] == line[-1] for line in g.parts) else "0"
    return "1"


def matrix(point_location: str, g: Geometry, g_is_point_equal: bool = False) -> str:
    """DE-9IM matrix (9 characters, row-major I, B, E of the point P vs I, B, E of G) when P
    lies at ``point_location`` relative to G."""
    row_i = "".join("0" if point_location == loc else "F" for loc in LOCATIONS)
    row_b = "FFF"  # a point has no boundary
    dim = str(g.dimension)
    if g.base == "Point":
        # I(G) is G's points; the exterior of P misses I(G) only when G is just P.
        interior_rest = "F" if g_is_point_equal and len(g.parts) == 1 else dim
    else:
        interior_rest = dim
    boundary = _boundary_dim(g)
    # A line's boundary is its end points: P can remove one of them, never all of them, since a
    # non-closed line has two distinct ends (or several, for a MultiLineString).
    row_e = interior_rest + boundary + "2"
    return row_i + row_b + row_e


def transpose(m: str) -> str:
    return "".join(m[r * 3 + c] for c in range(3) for r in range(3))


def pattern_matches(m: str, pattern: str) -> bool:
    """Does a DE-9IM matrix match a pattern of T, F, *, 0, 1, 2?"""
    if len(pattern) != 9 or any(c not in "TF*012" for c in pattern.upper()):
        raise GeometryError(
            f"a DE-9IM pattern is 9 characters of T, F, *, 0, 1, 2 (e.g. 'T*F**F***'), "
            f"not {pattern!r}"
        )
    for have, want in zip(m, pattern.upper(), strict=True):
        if want == "*":
            continue
        if want == "T" and have == "F":
            return False
        if want == "F" and have != "F":
            return False
        if want in "012" and have != want:
            return False
    return True


# Named predicates as DE-9IM patterns; "a op b" holds when any listed pattern matches.
PREDICATES: dict[str, tuple[str, ...]] = {
    "st_equals": ("T*F**FFF*",),
    "st_disjoint": ("FF*FF****",),
    "st_intersects": ("T********", "*T*******", "***T*****", "****T****"),
    "st_touches": ("FT*******", "F**T*****", "F***T****"),
    "st_within": ("T*F**F***",),
    "st_contains": ("T*****FF*",),
}


def predicate(name: str, m: str, dim_a: int, dim_b: int) -> bool:
    """Does ``name`` hold for two geometries whose DE-9IM matrix is ``m``?"""
    if name == "geo.intersects":
        name = "st_intersects"
    if name == "st_crosses":
        if dim_a < dim_b or (dim_a > dim_b):
            pat = "T*T******" if dim_a < dim_b else "T*****T**"
            return pattern_matches(m, pat)
        return dim_a == dim_b == 1 and pattern_matches(m, "0********")
    if name == "st_overlaps":
        if dim_a != dim_b:
            return False
        return pattern_matches(m, "1*T***T**" if dim_a == 1 else "T*T***T**")
    return any(pattern_matches(m, p) for p in PREDICATES[name])


def relate_for(
    name: str, g: Geometry, point_first: bool, pattern: str | None = None
) -> dict[str, bool]:
    """For a point P compared with G (``P op G`` when ``point_first``, else ``G op P``): the
    result of predicate ``name`` (or of ``st_relate`` with ``pattern``) for each location of P
    (interior, boundary, exterior of G), plus 'equal' for a point G equal to P."""
    out: dict[str, bool] = {}
    cases = [(loc, False) for loc in LOCATIONS]
    if g.base == "Point":
        cases = [("I", True), ("E", False)]
    for loc, equal in cases:
        m = matrix(loc, g, equal)
        dim_a, dim_b = 0, g.dimension
        if not point_first:
            m = transpose(m)
            dim_a, dim_b = dim_b, dim_a
        if name == "st_relate":
            assert pattern is not None
            out[loc] = pattern_matches(m, pattern)
        else:
            out[loc] = predicate(name, m, dim_a, dim_b)
    if g.base == "Point":
        out["B"] = False  # never happens: a point has no boundary
    return out


# --- evaluating a point in Python (literal-vs-literal and tests) ---------------------------
EPS = 1e-6  # PostgreSQL's EPSILON for geometric comparisons


def _on_segment(p: Coord, a: Coord, b: Coord) -> bool:
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    if length2 == 0:
        return abs(px - ax) <= EPS and abs(py - ay) <= EPS
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    cx, cy = ax + t * dx, ay + t * dy
    return (px - cx) ** 2 + (py - cy) ** 2 <= EPS * EPS


def _in_ring(p: Coord, ring: tuple[Coord, ...]) -> bool:
    """Ray casting; points on the ring are handled by the caller."""
    x, y = p
    inside = False
    for (x1, y1), (x2, y2) in pairwise(ring):
        if (y1 > y) != (y2 > y):
            xs = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if xs > x:
                inside = not inside
    return inside


def _on_ring(p: Coord, ring: tuple[Coord, ...]) -> bool:
    return any(_on_segment(p, a, b) for a, b in pairwise(ring))


def locate(p: Coord, g: Geometry) -> str:
    """'I', 'B' or 'E': where the point p lies relative to g."""
    if g.base == "Point":
        return (
            "I"
            if any(abs(p[0] - q[0][0]) <= EPS and abs(p[1] - q[0][1]) <= EPS for q in g.parts)
            else "E"
        )
    if g.base == "LineString":
        ends: list[Coord] = []
        on = False
        for line in g.parts:
            if line[0] != line[-1]:
                ends += [line[0], line[-1]]
            if any(_on_segment(p, a, b) for a, b in pairwise(line)):
                on = True
        if any(abs(p[0] - e[0]) <= EPS and abs(p[1] - e[1]) <= EPS for e in ends):
            return "B"
        return "I" if on else "E"
    where = "E"
    for poly in g.parts:
        if any(_on_ring(p, ring) for ring in poly):
            where = "B"
            continue
        if _in_ring(p, poly[0]) and not any(_in_ring(p, hole) for hole in poly[1:]):
            return "I"
    return where


def _segment_distance(p: Coord, a: Coord, b: Coord) -> float:
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return float(((px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2) ** 0.5)


def distance(p: Coord, g: Geometry) -> float:
    """Planar distance (degrees) from p to g, as :mod:`api.sta.spatial` computes it in SQL."""
    if g.base == "Point":
        return min(_segment_distance(p, q[0], q[0]) for q in g.parts)
    if locate(p, g) != "E":
        return 0.0
    lines: list[tuple[Coord, ...]] = (
        list(g.parts) if g.base == "LineString" else [r for poly in g.parts for r in poly]
    )
    return min(_segment_distance(p, a, b) for line in lines for a, b in pairwise(line))


def length(g: Geometry) -> float:
    """Length of a (multi)linestring in degrees; 0 for points and polygons (like PostGIS)."""
    if g.base != "LineString":
        return 0.0
    return sum(_segment_distance(a, b, b) for line in g.parts for a, b in pairwise(line))

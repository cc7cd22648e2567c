"""SQL for the spatial functions: where a point column lies relative to a WKT literal, with
PostgreSQL's built-in geometric types (see ``api/sta/geo.py`` for the method). Literal
coordinates are bound parameters cast to ``point``, ``path`` and ``polygon``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from psycopg import sql

from api.sta import geo

Param = Callable[[object], sql.Composable]

TRUE = sql.SQL("TRUE")
FALSE = sql.SQL("FALSE")


def _point(c: geo.Coord, param: Param) -> sql.Composable:
    return sql.SQL("point({}::float8, {}::float8)").format(param(c[0]), param(c[1]))


def _text(coords: tuple[geo.Coord, ...]) -> str:
    return ",".join(f"({x!r},{y!r})" for x, y in coords)


def _path(coords: tuple[geo.Coord, ...], param: Param) -> sql.Composable:
    return sql.SQL("{}::path").format(param("[" + _text(coords) + "]"))


def _polygon(ring: tuple[geo.Coord, ...], param: Param) -> sql.Composable:
    return sql.SQL("{}::polygon").format(param("(" + _text(ring[:-1]) + ")"))


def _any(parts: Sequence[sql.Composable]) -> sql.Composable:
    if not parts:
        return FALSE
    return sql.SQL("(") + sql.SQL(" OR ").join(parts) + sql.SQL(")")


def location(
    p: sql.Composable, g: geo.Geometry, param: Param
) -> tuple[sql.Composable, sql.Composable]:
    """(interior, boundary): SQL conditions that the point ``p`` lies in G's interior / on its
    boundary (exclusive: a point on the boundary is not in the interior)."""
    if g.base == "Point":
        return _any([sql.SQL("({} ~= {})").format(p, _point(q[0], param)) for q in g.parts]), FALSE
    if g.base == "LineString":
        on = _any([sql.SQL("({} <@ {})").format(p, _path(line, param)) for line in g.parts])
        ends = [c for line in g.parts if line[0] != line[-1] for c in (line[0], line[-1])]
        boundary = _any([sql.SQL("({} ~= {})").format(p, _point(c, param)) for c in ends])
        return sql.SQL("({} AND NOT {})").format(on, boundary), boundary
    interiors, boundaries = [], []
    for poly in g.parts:
        on_ring = _any([sql.SQL("({} <@ {})").format(p, _path(r, param)) for r in poly])
        in_hole = _any([sql.SQL("({} <@ {})").format(p, _polygon(h, param)) for h in poly[1:]])
        inside = sql.SQL("({} <@ {})").format(p, _polygon(poly[0], param))
        interiors.append(sql.SQL("({} AND NOT {} AND NOT {})").format(inside, on_ring, in_hole))
        boundaries.append(on_ring)
    interior = _any(interiors)
    return interior, sql.SQL("({} AND NOT {})").format(_any(boundaries), interior)


def by_location(
    results: dict[str, bool], interior: sql.Composable, boundary: sql.Composable
) -> sql.Composable:
    """A condition that is ``results[loc]`` for the point's location."""
    r_i, r_b, r_e = (TRUE if results[k] else FALSE for k in ("I", "B", "E"))
    return sql.SQL("(CASE WHEN {} THEN {} WHEN {} THEN {} ELSE {} END)").format(
        interior, r_i, boundary, r_b, r_e
    )


def distance(p: sql.Composable, g: geo.Geometry, param: Param) -> sql.Composable:
    """Planar distance (degrees) from the point ``p`` to G."""
    if g.base == "Point":
        parts = [sql.SQL("({} <-> {})").format(p, _point(q[0], param)) for q in g.parts]
    elif g.base == "LineString":
        parts = [sql.SQL("({} <-> {})").format(p, _path(line, param)) for line in g.parts]
    else:
        parts = []
        for poly in g.parts:
            outer = _polygon(poly[0], param)
            holes = [sql.SQL("({} <-> {})").format(p, _path(h, param)) for h in poly[1:]]
            inside_hole = (
                sql.SQL("least(") + sql.SQL(", ").join(holes) + sql.SQL(")")
                if holes
                else sql.SQL("0")
            )
            # Inside the outer ring but not in the polygon means: in a hole.
            parts.append(
                sql.SQL("(CASE WHEN {p} <@ {o} THEN {h} ELSE {p} <-> {o} END)").format(
                    p=p, o=outer, h=inside_hole
                )
            )
        interior, boundary = location(p, g, param)
        joined = sql.SQL("least(") + sql.SQL(", ").join(parts) + sql.SQL(")")
        return sql.SQL("(CASE WHEN {} OR {} THEN 0 ELSE {} END)").format(interior, boundary, joined)
    if len(parts) == 1:
        return parts[0]
    return sql.SQL("least(") + sql.SQL(", ").join(parts) + sql.SQL(")")

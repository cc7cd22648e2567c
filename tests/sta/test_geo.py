"""api/sta/geo.py and api/sta/spatial.py: point-in-geometry, DE-9IM predicates, and the SQL
of the spatial functions agreeing with the Python reference on the real database."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from api.sta import geo, spatial

SQUARE_WITH_HOLE = geo.parse_wkt("POLYGON((0 0, 4 0, 4 4, 0 4, 0 0), (1 1, 2 1, 2 2, 1 2, 1 1))")
LINE = geo.parse_wkt("LINESTRING(0 0, 2 2, 4 0)")
POINT = geo.parse_wkt("POINT(1 1)")


@pytest.mark.parametrize(
    ("p", "g", "where"),
    [
        ((3, 3), SQUARE_WITH_HOLE, "I"),
        ((0, 2), SQUARE_WITH_HOLE, "B"),  # on the outer ring
        ((1.5, 1), SQUARE_WITH_HOLE, "B"),  # on the hole's ring
        ((1.5, 1.5), SQUARE_WITH_HOLE, "E"),  # in the hole
        ((5, 5), SQUARE_WITH_HOLE, "E"),
        ((1, 1), LINE, "I"),
        ((0, 0), LINE, "B"),  # an end point
        ((4, 0), LINE, "B"),
        ((1, 0), LINE, "E"),
        ((1, 1), POINT, "I"),
        ((1, 2), POINT, "E"),
    ],
)
def test_locate(p: tuple[float, float], g: geo.Geometry, where: str) -> None:
    assert geo.locate(p, g) == where


@pytest.mark.parametrize(
    ("name", "where", "expected"),
    [
        ("st_within", "I", True),
        ("st_within", "B", False),  # a point on the boundary is not within (DE-9IM)
        ("st_within", "E", False),
        ("st_intersects", "I", True),
        ("st_intersects", "B", True),
        ("st_intersects", "E", False),
        ("geo.intersects", "B", True),
        ("st_disjoint", "E", True),
        ("st_disjoint", "B", False),
        ("st_touches", "B", True),
        ("st_touches", "I", False),
        ("st_contains", "I", False),  # a point contains no polygon
        ("st_overlaps", "I", False),
        ("st_crosses", "I", False),
        ("st_equals", "I", False),
    ],
)
def test_predicates_of_a_point_against_a_polygon(name: str, where: str, expected: bool) -> None:
    assert geo.relate_for(name, SQUARE_WITH_HOLE, point_first=True)[where] is expected


def test_reversed_arguments_transpose() -> None:
    # polygon contains point <=> point within polygon
    contains = geo.relate_for("st_contains", SQUARE_WITH_HOLE, point_first=False)
    within = geo.relate_for("st_within", SQUARE_WITH_HOLE, point_first=True)
    assert contains == within
    assert geo.relate_for("st_within", POINT, True)["I"] is True  # equal points
    assert geo.relate_for("st_equals", POINT, True) == {"I": True, "E": False, "B": False}


def test_relate_patterns_and_matrix() -> None:
    m = geo.matrix("I", SQUARE_WITH_HOLE)
    assert m == "0FFFFF212"
    assert geo.pattern_matches(m, "T*F**F***")  # within
    assert not geo.pattern_matches(m, "FF*FF****")  # disjoint
    assert geo.relate_for("st_relate", LINE, True, "0F*FFF***")["I"]
    with pytest.raises(geo.GeometryError, match="9 characters"):
        geo.pattern_matches(m, "T*F")


def test_distance_and_length() -> None:
    assert geo.distance((3, 3), SQUARE_WITH_HOLE) == 0.0
    assert geo.distance((1.5, 1.4), SQUARE_WITH_HOLE) == pytest.approx(0.4)
    assert geo.distance((6, 2), SQUARE_WITH_HOLE) == pytest.approx(2.0)
    assert geo.length(LINE) == pytest.approx(2 * 8**0.5)
    assert geo.length(SQUARE_WITH_HOLE) == 0.0


# --- SQL agrees with Python ------------------------------------------------------------------
GEOMETRIES = [
    SQUARE_WITH_HOLE,
    LINE,
    POINT,
    geo.parse_wkt("MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)), ((2 2, 3 2, 3 3, 2 2)))"),
    geo.parse_wkt("MULTILINESTRING((0 0, 1 1), (2 2, 3 1))"),
    geo.parse_wkt("MULTIPOINT((1 1), (2 2))"),
]
# Points on a 0.5 grid hit vertices, edges and holes as well as the plain inside and outside.
COORD = st.integers(-2, 10).map(lambda i: i / 2)


@pytest.mark.integration
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(x=COORD, y=COORD, g=st.sampled_from(GEOMETRIES))
def test_sql_location_and_distance_equal_python(
    migrated_db: str, x: float, y: float, g: geo.Geometry
) -> None:
    params: dict[str, object] = {}

    def param(v: object) -> sql.Composable:
        name = f"p{len(params)}"
        params[name] = v
        return sql.Placeholder(name)

    p = sql.SQL("point({}::float8, {}::float8)").format(param(x), param(y))
    interior, boundary = spatial.location(p, g, param)
    query = sql.SQL("SELECT {}, {}, {}").format(interior, boundary, spatial.distance(p, g, param))
    with psycopg.connect(migrated_db) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    where = "I" if row[0] else "B" if row[1] else "E"
    assert where == geo.locate((x, y), g), (x, y, g.kind)
    assert row[2] == pytest.approx(geo.distance((x, y), g), abs=1e-9)

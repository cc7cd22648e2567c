"""api/sta/filter.py: the $filter/$orderby grammar, its literals, limits and error messages."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.sta import filter as f
from api.sta import geo


def test_precedence_or_below_and_below_not_below_comparisons() -> None:
    node = f.parse("a eq 1 or b eq 2 and not c eq 3")
    assert isinstance(node, f.Binary) and node.op == "or"
    right = node.right
    assert isinstance(right, f.Binary) and right.op == "and"
    assert isinstance(right.right, f.Unary) and right.right.op == "not"
    assert isinstance(right.right.operand, f.Binary) and right.right.operand.op == "eq"


def test_arithmetic_binds_tighter_than_comparison_and_mul_tighter_than_add() -> None:
    node = f.parse("result add 2 mul 3 gt 10")
    assert isinstance(node, f.Binary) and node.op == "gt"
    add = node.left
    assert isinstance(add, f.Binary) and add.op == "add"
    assert isinstance(add.right, f.Binary) and add.right.op == "mul"


def test_parentheses_group() -> None:
    node = f.parse("(a eq 1 or b eq 2) and c eq 3")
    assert isinstance(node, f.Binary) and node.op == "and"
    assert isinstance(node.left, f.Binary) and node.left.op == "or"


def test_paths_and_functions() -> None:
    node = f.parse("st_within(Thing/Locations/location, geography'POINT(3.7 51.05)')")
    assert isinstance(node, f.Call) and node.name == "st_within"
    assert node.args[0] == f.Path(("Thing", "Locations", "location"))
    g = node.args[1]
    assert isinstance(g, f.Literal) and g.kind == "geometry"
    assert f.parse("@iot.id eq 'x'") == f.Binary(
        "eq", f.Path(("@iot.id",)), f.Literal("x", "string")
    )


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("'it''s'", "it's", "string"),
        ("42", 42, "number"),
        ("-42", -42, "number"),
        ("2.5e3", 2500.0, "number"),
        ("true", True, "bool"),
        ("null", None, "null"),
        ("2026-11-29T19:00:00Z", datetime(2026, 11, 29, 19, tzinfo=UTC), "datetime"),
        ("2026-11-29T20:00:00+01:00", datetime(2026, 11, 29, 19, tzinfo=UTC), "datetime"),
        # An unencoded '+' in a query string arrives as a space.
        ("2026-11-29T20:00:00 01:00", datetime(2026, 11, 29, 19, tzinfo=UTC), "datetime"),
        (
            "2026-11-29T19:00:00.123456789Z",
            datetime(2026, 11, 29, 19, 0, 0, 123456, tzinfo=UTC),
            "datetime",
        ),
        ("2026-11-29", date(2026, 11, 29), "date"),
        ("19:30:00", time(19, 30), "time"),
        ("duration'P1DT2H30M'", timedelta(days=1, hours=2, minutes=30), "duration"),
        ("duration'PT0.5S'", timedelta(seconds=0.5), "duration"),
    ],
)
def test_literals(text: str, value: object, kind: str) -> None:
    node = f.parse(f"x eq {text}")
    assert isinstance(node, f.Binary)
    assert node.right == f.Literal(value, kind)


def test_negative_number_after_an_operator_and_negation_of_an_expression() -> None:
    assert f.parse("x gt -1") == f.Binary("gt", f.Path(("x",)), f.Literal(-1, "number"))
    node = f.parse("- result lt 0")
    assert isinstance(node, f.Binary) and isinstance(node.left, f.Unary) and node.left.op == "neg"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("name eq", "expected a value"),
        ("name eq 'x", "unterminated string"),
        ("name eq 'x' and", "expected a value"),
        ("(name eq 'x'", "expected ')'"),
        ("name eq 'x')", "')' is unexpected"),
        ("name eq 'x' name eq 'y'", "missing 'and'/'or'"),
        ("foo(name)", "unknown function 'foo'"),
        ("startswith(name)", "takes 2 argument(s), 1 given"),
        ("x eq 2026-11-29T19:00:00", "needs a UTC offset"),
        ("x eq 2026-02-30T19:00:00Z", "invalid date-time"),
        ("x eq 2026-13-01", "invalid date"),
        ("x eq duration'P1M'", "invalid duration"),
        ("x eq geography'CIRCLE(1 2)'", "invalid geography literal"),
        ("x eq geography'POINT(200 51)'", "outside WGS84"),
        ("x eq geography'POLYGON((0 0, 1 0, 1 1))'", "at least 4 positions"),
        ("x eq blob'abc'", "unknown typed literal"),
        ("x eq #", "unexpected character"),
        ("x/ eq 1", "a property name after '/'"),
        ("x eq 1.2.3", "invalid number"),
    ],
)
def test_malformed_expressions_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(f.FilterError) as e:
        f.parse(text)
    assert message in str(e.value)


def test_position_is_reported() -> None:
    with pytest.raises(f.FilterError, match=r"at character 9"):
        f.parse("name eq # 'x'")


def test_limits_of_length_depth_and_size() -> None:
    with pytest.raises(f.FilterError, match="characters long"):
        f.parse("a eq '" + "x" * f.MAX_LENGTH + "'")
    with pytest.raises(f.FilterError, match="nested deeper"):
        f.parse("(" * 200 + "a eq 1" + ")" * 200)
    with pytest.raises(f.FilterError, match="nested deeper"):
        f.parse("not " * 200 + "a eq 1")
    with pytest.raises(f.FilterError, match="more than"):
        f.parse(" or ".join(f"a eq {i}" for i in range(300)))


def test_orderby() -> None:
    items = f.parse_orderby(
        "phenomenonTime desc, geo.distance(location, geography'POINT(1 2)') asc, id"
    )
    assert [i.descending for i in items] == [True, False, False]
    assert isinstance(items[1].expr, f.Call)
    with pytest.raises(f.FilterError, match="expected ','"):
        f.parse_orderby("name up")


def test_conjuncts_and_paths() -> None:
    node = f.parse("a eq 1 and (b eq 2 and c/d eq 3) and (e eq 1 or f eq 2)")
    assert len(f.conjuncts(node)) == 4
    assert {str(p) for p in f.paths(node)} == {"a", "b", "c/d", "e", "f"}


def test_wkt_forms() -> None:
    g = geo.parse_wkt(
        "SRID=4326;POLYGON((0 0, 2 0, 2 2, 0 2, 0 0), (0.5 0.5, 1 0.5, 1 1, 0.5 0.5))"
    )
    assert g.kind == "Polygon" and len(g.parts[0]) == 2
    assert geo.parse_wkt("MULTIPOINT((1 2), (3 4))").parts == (((1.0, 2.0),), ((3.0, 4.0),))
    assert geo.parse_wkt("POINT Z (1 2 3)").parts == (((1.0, 2.0),),)
    with pytest.raises(geo.GeometryError, match="SRID 4326"):
        geo.parse_wkt("SRID=31370;POINT(1 2)")


# --- fuzzing: any text is parsed or refused with a FilterError, never anything else ------
@settings(max_examples=400, deadline=None)
@given(st.text(max_size=120))
def test_random_text_never_crashes_the_parser(text: str) -> None:
    with contextlib.suppress(f.FilterError):
        f.parse(text)


_ALPHABET = st.sampled_from(
    [
        *list("()',/ -:."),
        *("eq", "and", "or", "not", "name", "result", "1", "2026-11-29T19:00:00Z"),
        *("geography'POINT(1 2)'", "st_within(", "duration'P1D'", "'a'", "now()"),
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_ALPHABET, max_size=30).map(" ".join))
def test_random_token_soup_never_crashes_the_parser(text: str) -> None:
    with contextlib.suppress(f.FilterError):
        f.parse(text)

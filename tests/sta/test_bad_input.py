"""Bad input to /sta/v1.1 gets the standard's error response, a 4xx with a message, and never
a 5xx or an unbounded query: malformed and ill-typed $filter, unknown names in $select,
$orderby and $expand, $top beyond the maximum, deep $expand chains, responses that would be
too large, malformed paths and keys; and, fuzzed with hypothesis, random text and random
well-formed expressions."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sta.conftest import StaWorld

pytestmark = pytest.mark.integration

R = "/sta/v1.1"


def error(w: StaWorld, url: str, status: int = 400, method: str = "GET") -> str:
    r = w.client.request(method, url)
    assert r.status_code == status, (url, r.status_code, r.text)
    body = r.json()
    assert body["code"] == status and body["type"] == "error" and body["message"], body
    return str(body["message"])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"{R}/Things?$filter=name eq", "$filter: expected a value"),
        (f"{R}/Things?$filter=name eq 'x", "unterminated string"),
        (f"{R}/Things?$filter=nam eq 'x'", "Thing has no property 'nam'"),
        (f"{R}/Things?$filter=name", "not a condition"),
        (f"{R}/Things?$filter=name add 1 eq 2", "'add' is not defined for a string and a number"),
        (f"{R}/Things?$filter=Datastreams eq 1", "is an entity, not a value"),
        (f"{R}/Things?$filter=Datastreams/Observations/result gt 1", "through Observations"),
        (f"{R}/HistoricalLocations?$filter=time eq 2026-01-01", "use date(...)"),
        (f"{R}/Things?$filter=st_within(name, geography'POINT(1 2)')", "compares geometries"),
        (f"{R}/Locations?$filter=location eq geography'POINT(1 2)'", "st_equals"),
        (
            f"{R}/Locations?$filter=st_within(geography'POLYGON((0 0, 1 0, 1 1, 0 0))',"
            " geography'POLYGON((0 0, 2 0, 2 2, 0 0))')",
            "needs one of them to be a POINT",
        ),
        (
            f"{R}/Locations?$filter=st_relate(location, geography'POINT(1 2)', 'XYZ')",
            "DE-9IM pattern",
        ),
        (f"{R}/Things?$filter=length(name) div 0 eq 1", "division by zero"),
        (f"{R}/Things?$filter=substring(name, 1, -2) eq 'x'", "could not be evaluated"),
        (f"{R}/Things?$select=name,colour", "Thing has no property 'colour'"),
        (f"{R}/Things?$orderby=colour", "Thing has no property 'colour'"),
        (f"{R}/Things?$orderby=Datastreams/name", "a collection"),
        (f"{R}/Things?$orderby=name sideways", "expected ','"),
        (f"{R}/Things?$expand=Gadgets", "no navigation property 'Gadgets'"),
        (f"{R}/Things?$expand=Datastreams($colour=red)", "unknown query option $colour"),
        (f"{R}/Things?$expand=Datastreams($top=1", "unbalanced parentheses"),
        (f"{R}/Datastreams?$expand=Thing($top=2)", "single entity"),
        (f"{R}/Things?$top=10001", "$top may be at most 10000"),
        (f"{R}/Things?$top=-1", "non-negative integer"),
        (f"{R}/Things?$skip=ten", "non-negative integer"),
        (f"{R}/Things?$count=yes", "true or false"),
        (f"{R}/Things?$colour=red", "unknown query option $colour"),
        (f"{R}/Things?$top=1&$top=2", "appears more than once"),
        (f"{R}/Things?$expand=Datastreams/Thing/Datastreams/Thing", "at most 3 levels"),
        (
            f"{R}/Things?$expand=Datastreams($expand=Thing($expand=Datastreams($expand=Thing)))",
            "at most 3 levels",
        ),
        (
            f"{R}/Things?$top=1000&$expand=Datastreams($top=1000;$expand=Observations($top=1000))",
            "could return up to",
        ),
        (f"{R}/Things('gent-air-1')?$top=2", "applies to collections"),
        (f"{R}/Things?$resultFormat=csv", "supports only dataArray"),
        (f"{R}/Things(gent-air-1)", "write string keys in quotes"),
        (f"{R}/Things gent", "malformed path segment"),
        (f"{R}/Things(abc)", "write string keys in quotes"),
        (f"{R}/Things('a'b')", "a quote inside a key"),
        (f"{R}/Things/name", "follows a collection"),
        (f"{R}/Things('gent-air-1')/$value", "$value follows a property"),
        (f"{R}/Things('gent-air-1')/name/$ref", "$ref applies to navigation properties"),
        (f"{R}/" + "/".join(["Things('a')"] * 20), "at most 12 segments"),
    ],
)
def test_bad_requests_get_a_400_with_a_message(sta_ro: StaWorld, url: str, message: str) -> None:
    assert message in error(sta_ro, url)


def test_writes_other_than_observations_are_refused(sta_ro: StaWorld) -> None:
    assert "creates Observations only" in error(sta_ro, f"{R}/Things", 405, "POST")
    assert "does not update or delete" in error(sta_ro, f"{R}/Things('gent-air-1')", 405, "PATCH")
    assert "does not update or delete" in error(sta_ro, f"{R}/Observations", 405, "DELETE")


def test_an_expanded_collection_shrinks_its_default_top_to_fit(sta_ro: StaWorld) -> None:
    # 100 Things x 100 Datastreams x 100 Observations would be a million entities: the
    # defaults shrink instead, and each expanded collection links its next page.
    body = sta_ro.ok(f"{R}/Things?$expand=Datastreams($expand=Observations)")
    ds = body["value"][0]["Datastreams"][0]
    assert 0 < len(ds["Observations"]) < 100
    assert "Observations@iot.nextLink" in ds


# --- fuzzing -----------------------------------------------------------------------------
FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def never_5xx(w: StaWorld, url: str) -> None:
    r = w.get(url)
    assert r.status_code in (200, 400, 404, 501), (url, r.status_code, r.text)
    if r.status_code != 200:
        body = r.json()
        # STA errors carry "message"; a path no route matches (a newline in it) gets FastAPI's
        # plain 404.
        assert body.get("message") or (r.status_code == 404 and body.get("detail"))


@FUZZ
@given(st.text(max_size=80))
def test_random_text_as_filter_is_never_a_server_error(sta_ro: StaWorld, text: str) -> None:
    never_5xx(sta_ro, f"{R}/Things?$filter={quote(text)}")
    never_5xx(
        sta_ro, f"{R}/Datastreams('gent-air-1:pm25')/Observations?$top=5&$filter={quote(text)}"
    )


# Fragments of the query language glued at random: more of them reach the compiler and the
# database than random characters do (this found an ORDER BY of a bare constant).
SOUP = st.lists(
    st.sampled_from(
        [
            *list("()',/ -:.;$="),
            *("eq", "and", "or", "not", "name", "result", "phenomenonTime", "Datastream"),
            *("Thing", "Locations", "location", "1", "2026-11-29T19:00:00Z", "null"),
            *("geography'POINT(1 2)'", "st_within(", "duration'P1D'", "'a'", "now()", "$top"),
            *("$expand", "$filter", "$select", "Observations", "Datastreams", "id"),
            *("substring(", "geo.distance(", "-", "mod", "div", "properties", "@iot.id"),
            *("desc", "asc"),
        ]
    ),
    max_size=25,
).map("".join)


@FUZZ
@given(
    SOUP,
    st.sampled_from(["$filter", "$orderby", "$select", "$expand", "$top", "$skip", "$skiptoken"]),
    st.sampled_from(["Things", "Observations", "Datastreams('gent-air-1:pm25')/Observations"]),
)
def test_random_fragments_in_any_option_are_never_a_server_error(
    sta_ro: StaWorld, text: str, option: str, collection: str
) -> None:
    never_5xx(sta_ro, f"{R}/{collection}?$top=3&{option}={quote(text)}")


@FUZZ
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=40))
def test_random_paths_are_never_a_server_error(sta_ro: StaWorld, text: str) -> None:
    never_5xx(sta_ro, f"{R}/{quote(text, safe='/()')}")


THING_PATHS = [
    "name",
    "description",
    "id",
    "properties/status",
    "properties/heightM",
    "Locations/location",
    "Datastreams/name",
    "Datastreams/ObservedProperty/id",
    "HistoricalLocations/time",
    "Datastreams/unitOfMeasurement/symbol",
]
OBS_PATHS = [
    "result",
    "phenomenonTime",
    "resultTime",
    "id",
    "Datastream/name",
    "Datastream/Thing/properties/municipality",
    "FeatureOfInterest/feature",
    "Datastream/phenomenonTime",
    "Datastream/observedArea",
]
LITERALS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.text(max_size=8).map(lambda s: "'" + s.replace("'", "''") + "'"),
    st.sampled_from(
        [
            "true",
            "null",
            "2026-11-29T19:00:00Z",
            "2026-11-29",
            "19:00:00",
            "duration'PT1H'",
            "geography'POINT(3.72 51.05)'",
            "geography'POLYGON((3 51, 4 51, 4 52, 3 51))'",
            "geography'LINESTRING(3 51, 4 52)'",
            "now()",
            "mindatetime()",
        ]
    ),
)
FUNCTIONS = {
    "substringof": 2,
    "contains": 2,
    "endswith": 2,
    "startswith": 2,
    "length": 1,
    "indexof": 2,
    "substring": 2,
    "tolower": 1,
    "toupper": 1,
    "trim": 1,
    "concat": 2,
    "year": 1,
    "month": 1,
    "day": 1,
    "hour": 1,
    "minute": 1,
    "second": 1,
    "fractionalseconds": 1,
    "date": 1,
    "time": 1,
    "totaloffsetminutes": 1,
    "round": 1,
    "floor": 1,
    "ceiling": 1,
    "geo.distance": 2,
    "geo.length": 1,
    "geo.intersects": 2,
    "st_within": 2,
    "st_touches": 2,
    "st_equals": 2,
    "st_disjoint": 2,
    "st_contains": 2,
    "st_overlaps": 2,
    "st_crosses": 2,
}


def expressions(paths: list[str]) -> st.SearchStrategy[str]:
    leaf = st.one_of(st.sampled_from(paths), LITERALS)

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binary = st.tuples(
            inner,
            st.sampled_from(
                ["eq", "ne", "gt", "ge", "lt", "le", "and", "or", "add", "sub", "mul", "div", "mod"]
            ),
            inner,
        ).map(lambda t: f"{t[0]} {t[1]} {t[2]}")
        call = st.sampled_from(sorted(FUNCTIONS)).flatmap(
            lambda name: st.lists(inner, min_size=FUNCTIONS[name], max_size=FUNCTIONS[name]).map(
                lambda args: f"{name}({', '.join(args)})"
            )
        )
        return st.one_of(
            binary, call, inner.map(lambda e: f"not ({e})"), inner.map(lambda e: f"({e})")
        )

    return st.recursive(leaf, extend, max_leaves=6)


@FUZZ
@given(expressions(THING_PATHS))
def test_random_well_formed_filters_on_things_are_200_or_400(sta_ro: StaWorld, expr: str) -> None:
    never_5xx(sta_ro, f"{R}/Things?$filter={quote(expr)}")


@FUZZ
@given(expressions(OBS_PATHS))
def test_random_well_formed_filters_on_observations_are_200_or_400(
    sta_ro: StaWorld, expr: str
) -> None:
    never_5xx(sta_ro, f"{R}/Observations?$top=5&$orderby=Datastream/id&$filter={quote(expr)}")


@FUZZ
@given(
    st.lists(
        st.sampled_from([*THING_PATHS, "geo.distance(Locations/location, geography'POINT(1 2)')"]),
        min_size=1,
        max_size=3,
    ),
    st.booleans(),
)
def test_random_orderby_on_things_is_200_or_400(
    sta_ro: StaWorld, paths: list[str], desc: bool
) -> None:
    order = ",".join(p + (" desc" if desc else "") for p in paths)
    never_5xx(sta_ro, f"{R}/Things?$orderby={quote(order)}")

"""api/sta/observations.py: keyset paging through Observations returns exactly the rows, in
exactly the order, that plain SQL gives: for one Datastream and across many, ascending and
descending, with time bounds, with $skip, and when the per-request budget cuts pages short."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.schemas import rfc3339_utc
from api.sta import observations
from meetnet.settings import Settings
from tests.sta.conftest import N_READINGS, PUBLIC, SENSORS, START, STEP, TYPES, StaWorld

pytestmark = pytest.mark.integration

R = "/sta/v1.1"
PUBLIC_DS = sorted(f"{s}:{m}" for s in PUBLIC for m, *_ in TYPES[SENSORS[s][2]])


def walk(w: StaWorld, url: str) -> tuple[list[str], int]:
    """Follow @iot.nextLink to the end: every id, and the number of requests."""
    out: list[str] = []
    n = 0
    next_url: str | None = url
    while next_url:
        n += 1
        assert n < 2000, "paging does not end"
        body = w.ok(next_url.removeprefix("http://testserver"))
        out += [o["@iot.id"] for o in body["value"]]
        next_url = body.get("@iot.nextLink")
    return out, n


def sql_ids(
    w: StaWorld, where: str = "TRUE", order: str = "ds, ts", params: tuple[object, ...] = ()
) -> list[str]:
    ds_sql = "s.sensor_id || ':' || s.metric"
    order_sql = order.replace("ds", ds_sql + ' COLLATE "C"').replace("ts", "r.ts")
    rows = w.db.execute(
        f"SELECT {ds_sql} AS ds, r.ts FROM readings r JOIN series s USING (series_id)"
        " JOIN sensors x ON x.sensor_id = s.sensor_id"
        f" WHERE x.visibility = 'public' AND {where} ORDER BY {order_sql}",
        params,
    ).fetchall()
    return [f"{ds}:{rfc3339_utc(ts)}" for ds, ts in rows]


def test_one_datastream_both_directions(sta_ro: StaWorld) -> None:
    ds = "gent-air-2:temperature"
    expected = [f"{ds}:{rfc3339_utc(START + i * STEP)}" for i in range(N_READINGS)]
    got, _ = walk(sta_ro, f"{R}/Datastreams('{ds}')/Observations?$top=37")
    assert got == expected
    got, _ = walk(
        sta_ro, f"{R}/Datastreams('{ds}')/Observations?$top=50&$orderby=phenomenonTime desc"
    )
    assert got == expected[::-1]


def test_across_datastreams_in_time_order_and_in_datastream_order(sta_ro: StaWorld) -> None:
    got, _ = walk(sta_ro, f"{R}/Observations?$top=333&$orderby=phenomenonTime asc")
    assert got == sql_ids(sta_ro, order="ts, ds")
    got, _ = walk(
        sta_ro, f"{R}/Observations?$top=333&$orderby=phenomenonTime desc,Datastream/id desc"
    )
    assert got == sql_ids(sta_ro, order="ts DESC, ds DESC")
    got, _ = walk(
        sta_ro, f"{R}/Observations?$top=1000&$orderby=Datastream/id desc,phenomenonTime desc"
    )
    assert got == sql_ids(sta_ro, order="ds DESC, ts DESC")
    got, _ = walk(
        sta_ro, f"{R}/Things('gent-air-1')/Datastreams('gent-air-1:pm25')/Observations?$top=200"
    )
    assert got == sql_ids(sta_ro, "s.sensor_id = 'gent-air-1' AND s.metric = 'pm25'")


def test_time_bounds_and_conditions_on_each_reading(sta_ro: StaWorld) -> None:
    lo, hi = START + 100 * STEP, START + 250 * STEP
    flt = quote(
        f"phenomenonTime ge {rfc3339_utc(lo)} and phenomenonTime lt {rfc3339_utc(hi)}"
        " and result gt 20.12"
    )
    got, _ = walk(sta_ro, f"{R}/Observations?$filter={flt}&$top=77&$orderby=phenomenonTime")
    expected = sql_ids(sta_ro, "r.ts >= %s AND r.ts < %s AND r.value > 20.12", "ts, ds", (lo, hi))
    assert got == expected and expected


def test_skip_is_bounded_and_continues_by_position(sta_ro: StaWorld) -> None:
    expected = sql_ids(sta_ro)
    got, _ = walk(sta_ro, f"{R}/Observations?$skip=1000&$top=400")
    assert got == expected[1000:]
    r = sta_ro.get(f"{R}/Observations?$skip=10001")
    assert r.status_code == 400 and "$skip may be at most 10000" in r.json()["message"]


@pytest.mark.parametrize(
    "order", ["", "&$orderby=phenomenonTime desc", "&$orderby=Datastream/id,phenomenonTime desc"]
)
def test_a_budget_cut_short_page_continues_exactly(
    sta_ro: StaWorld, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    # One small window per request: pages end early (even empty) but the walk is complete.
    monkeypatch.setattr(observations, "PAGE_BUDGET_S", 0.0)
    monkeypatch.setattr(observations, "FIRST_WINDOW", timedelta(hours=7))
    monkeypatch.setattr(observations, "WINDOW_GROWTH", 2)
    flt = "&$filter=" + quote(
        "Datastream/Thing/id eq 'gent-air-1' or Datastream/Thing/id eq 'gent-noise-1'"
    )
    ordered, _ = walk(sta_ro, f"{R}/Observations?$top=10000{order}{flt}")
    monkeypatch.setattr(observations, "PAGE_BUDGET_S", 0.0)
    got, requests = walk(sta_ro, f"{R}/Observations?$top=250{order}{flt}")
    assert requests > len(ordered) // 250 + 1  # the budget did cut pages short
    assert got == ordered and len(got) == 3 * N_READINGS
    skipped, _ = walk(sta_ro, f"{R}/Observations?$top=100&$skip=700{order}{flt}")
    assert skipped == ordered[700:]


def test_time_order_merges_at_most_the_configured_datastreams(
    base_settings: Settings, sta_ro: StaWorld
) -> None:
    settings = base_settings.model_copy(update={"sta_max_merge_datastreams": 3})
    with TestClient(create_app(settings)) as client:
        r = client.get(f"{R}/Observations?$orderby=phenomenonTime")
        assert r.status_code == 400
        assert "merges at most 3 Datastreams" in r.json()["message"]
        # ordered by Datastream it works for any number of them
        assert client.get(f"{R}/Observations?$top=5").status_code == 200
        # narrowed to few Datastreams, time order works again
        one = f"{R}/Things('gent-air-1')/Datastreams('gent-air-1:pm25')/Observations"
        r = client.get(f"{one}?$orderby=phenomenonTime desc")
        assert r.status_code == 200


@pytest.mark.parametrize(
    ("orderby", "message"),
    [
        ("result", "is not supported"),
        ("id", "is not supported"),
        ("resultTime desc", "no separate resultTime"),
        ("phenomenonTime desc,Datastream/id asc", "is not supported"),
    ],
)
def test_orders_the_index_cannot_serve_are_refused(
    sta_ro: StaWorld, orderby: str, message: str
) -> None:
    r = sta_ro.get(f"{R}/Observations?$orderby={quote(orderby)}")
    assert r.status_code == 400 and message in r.json()["message"]


def test_skiptoken_is_checked(sta_ro: StaWorld) -> None:
    body = sta_ro.ok(f"{R}/Observations?$top=2")
    token = body["@iot.nextLink"].split("$skiptoken=")[1]
    r = sta_ro.get(f"{R}/Observations?$top=2&$orderby=phenomenonTime&$skiptoken={token}")
    assert r.status_code == 400 and "another $orderby" in r.json()["message"]
    for bad in ("abc", "!!", quote("o1|s00|x|y")):
        r = sta_ro.get(f"{R}/Observations?$skiptoken={bad}")
        assert r.status_code == 400 and "$skiptoken" in r.json()["message"]
    assert sta_ro.get(f"{R}/Things?$skiptoken={token}").status_code == 400


@pytest.mark.parametrize(
    "options",
    [
        "$top=50;$orderby=phenomenonTime desc",
        "$top=40",
        "$top=30;$filter=result gt 20.1;$orderby=phenomenonTime desc",
        "$top=5;$skip=3;$filter=phenomenonTime lt " + rfc3339_utc(START + 100 * STEP),
    ],
)
def test_expanded_observations_equal_each_datastream_s_own_pages(
    sta_ro: StaWorld, monkeypatch: pytest.MonkeyPatch, options: str
) -> None:
    # Small windows, so that pages need more than the batched first window.
    monkeypatch.setattr(observations, "FIRST_WINDOW", timedelta(hours=2))
    body = sta_ro.ok(f"{R}/Datastreams?$top=100&$expand=Observations({quote(options)})")
    plain = options.replace(";", "&")
    assert len(body["value"]) == len(PUBLIC_DS)
    for ds in body["value"]:
        own = sta_ro.ok(f"{R}/Datastreams('{ds['@iot.id']}')/Observations?{plain}")
        assert [o["@iot.id"] for o in ds["Observations"]] == [o["@iot.id"] for o in own["value"]]
        assert ("Observations@iot.nextLink" in ds) == ("@iot.nextLink" in own)
        if "@iot.nextLink" in own:
            follow = sta_ro.ok(ds["Observations@iot.nextLink"].removeprefix("http://testserver"))
            again = sta_ro.ok(own["@iot.nextLink"].removeprefix("http://testserver"))
            assert follow["value"] == again["value"]

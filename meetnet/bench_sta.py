"""``meetnet bench sta``: SensorThings Observations queries on a large dataset, against plain
SQL of the same query on the same database.

1. Registers ``--sensors`` public sensors ``bench-sta-NNNN`` (municipality 44021, sensor type
   ``bench-sta`` with the five air-quality metrics) and loads ``--readings`` readings into each
   of their series, one per minute ending now, with NumPy-encoded binary COPY (time-major, as
   ingestion writes them). A dataset already loaded with the same shape is reused; ``--reload``
   loads it again, ``--cleanup`` deletes it afterwards.
2. Starts ``meetnet api`` on a free port (a real process) and, for each scenario, sends
   ``--runs`` requests over one keep-alive HTTP connection (a random Datastream, time range or
   position each time), then runs the plain SQL that answers the same question as many times.
3. Reports p50 and p99 per scenario (milliseconds) for both, and their ratio. For the merged
   Thing scenario also a hand-written SQL shaped like the STA engine's plan.

Scenarios: the newest 100 readings of a Datastream; a 6-hour time range ($filter, 360
readings); paging through a whole Datastream 1000 readings at a time by @iot.nextLink (each
page's latency, so depth shows); the newest 100 readings of a Thing's five Datastreams merged
by time; the newest reading of each Datastream of a Thing through $expand.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import psycopg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from meetnet import procs
from meetnet.settings import Settings
from store.copy import encode_readings
from store.db import connect
from store.migrate import migrate

log = logging.getLogger(__name__)

TYPE = "bench-sta"
MUNICIPALITY = "44021"
METRICS = ("humidity", "no2", "pm10", "pm25", "temperature")
STEP_US = 60_000_000  # one reading per minute
COPY_ROWS = 2_000_000  # rows per COPY statement
# The merged newest 100 of several series as the STA engine answers it: each series' own
# newest 100 by its index, then merged (the obvious ``series_id = ANY(...) ORDER BY ts``
# reads and sorts every row of the series).
MERGED_BY_HAND = (
    "SELECT s, l.ts, l.value FROM unnest(%s::int[]) s CROSS JOIN LATERAL"
    " (SELECT ts, value FROM readings WHERE series_id = s ORDER BY ts DESC LIMIT 100) l"
    " ORDER BY l.ts DESC, s LIMIT 100"
)


def sensor_id(i: int) -> str:
    return f"bench-sta-{i:04d}"


@dataclass
class Dataset:
    sensors: int
    per_series: int
    first: datetime
    last: datetime
    series: dict[str, int]  # datastream id -> series id

    @property
    def rows(self) -> int:
        return self.sensors * len(METRICS) * self.per_series


def _register(conn: psycopg.Connection, sensors: int) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO municipalities (nis_code, name) VALUES (%s, 'Gent')"
            " ON CONFLICT DO NOTHING",
            (MUNICIPALITY,),
        )
        conn.execute(
            "INSERT INTO sensor_types (type_id, name) VALUES (%s, 'bench') ON CONFLICT DO NOTHING",
            (TYPE,),
        )
        conn.execute(
            "INSERT INTO sensor_type_metrics (type_id, metric, unit, min_value, max_value,"
            " interval_s) SELECT %s, m, '1', -1e9, 1e9, 60 FROM unnest(%s::text[]) m"
            " ON CONFLICT DO NOTHING",
            (TYPE, list(METRICS)),
        )
        conn.execute(
            "INSERT INTO sensors (sensor_id, municipality, type_id, lat, lon, visibility)"
            " SELECT s, %s, %s, 51.0 + i / 10000.0, 3.7 + i / 10000.0, 'public'"
            " FROM unnest(%s::text[]) WITH ORDINALITY AS u(s, i) ON CONFLICT DO NOTHING",
            (MUNICIPALITY, TYPE, [sensor_id(i) for i in range(sensors)]),
        )
        conn.execute(
            "INSERT INTO series (sensor_id, metric) SELECT s, m FROM unnest(%s::text[]) s"
            " CROSS JOIN unnest(%s::text[]) m ON CONFLICT DO NOTHING",
            ([sensor_id(i) for i in range(sensors)], list(METRICS)),
        )


def _series(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT sensor_id || ':' || metric, series_id FROM series"
        " WHERE sensor_id LIKE 'bench-sta-%'"
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def _existing(
    conn: psycopg.Connection, series: dict[str, int]
) -> tuple[int, datetime, datetime] | None:
    if not series:
        return None
    sid = min(series.values())
    row = conn.execute(
        "SELECT count(*), min(ts), max(ts) FROM readings WHERE series_id = %s", (sid,)
    ).fetchone()
    if row is None or not row[0]:
        return None
    return int(row[0]), row[1], row[2]


def _delete(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute(
            "DELETE FROM readings WHERE series_id IN"
            " (SELECT series_id FROM series WHERE sensor_id LIKE 'bench-sta-%')"
        )
        conn.execute("DELETE FROM series WHERE sensor_id LIKE 'bench-sta-%'")
        conn.execute("DELETE FROM sensors WHERE sensor_id LIKE 'bench-sta-%'")
        conn.execute("DELETE FROM sensor_type_metrics WHERE type_id = %s", (TYPE,))
        conn.execute("DELETE FROM sensor_types WHERE type_id = %s", (TYPE,))


def _load(
    conn: psycopg.Connection, ids: np.ndarray, per_series: int, end_us: int, console: Console
) -> float:
    """COPY ``per_series`` readings into each series, time-major; returns rows/s."""
    n_series = len(ids)
    first_us = end_us - (per_series - 1) * STEP_US
    steps_per_copy = max(1, COPY_ROWS // n_series)
    rng = np.random.default_rng(1)
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("loading readings", total=per_series * n_series)
        for s0 in range(0, per_series, steps_per_copy):
            steps = min(steps_per_copy, per_series - s0)
            ts = first_us + (s0 + np.repeat(np.arange(steps, dtype=np.int64), n_series)) * STEP_US
            series = np.tile(ids, steps)
            values = 20 + 10 * np.sin(ts / 3.6e9 + series) + rng.normal(0, 1, len(ts))
            buf = encode_readings(series, ts, values)
            with (
                conn.transaction(),
                conn.cursor().copy(
                    "COPY readings (series_id, ts, value) FROM STDIN (FORMAT BINARY)"
                ) as cp,
            ):
                cp.write(buf)
            progress.advance(task, steps * n_series)
    elapsed = time.perf_counter() - started
    conn.execute("ANALYZE readings")
    return per_series * n_series / elapsed


def prepare(
    settings: Settings, sensors: int, per_series: int, reload: bool, console: Console
) -> Dataset:
    with connect(settings, app="bench-sta", autocommit=True) as conn:
        migrate(conn)
        series = _series(conn)
        have = _existing(conn, series)
        want_series = sensors * len(METRICS)
        if reload or have is None or have[0] != per_series or len(series) != want_series:
            if series:
                console.print("removing the previous bench dataset")
                _delete(conn)
            _register(conn, sensors)
            series = _series(conn)
            end_us = int(time.time() * 1e6) // STEP_US * STEP_US
            ids = np.array(sorted(series.values()), dtype=np.int32)
            console.print(
                f"loading {per_series * want_series:,} readings ({want_series} series x "
                f"{per_series:,}, one per minute)"
            )
            rate = _load(conn, ids, per_series, end_us, console)
            console.print(f"loaded at {rate:,.0f} rows/s")
            have = _existing(conn, series)
        else:
            console.print(f"reusing the loaded dataset ({per_series * want_series:,} readings)")
        assert have is not None
        return Dataset(sensors, per_series, have[1], have[2], series)


# --- measuring ---------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if len(values) > 1
        else values[0]
    )


@dataclass
class Result:
    name: str
    sta_ms: list[float]
    sql_ms: list[float]
    rows: int
    # A second SQL for the same question, written by hand the way the STA engine plans it
    # (only where the obvious SQL is not the fast one).
    hand_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": self.name,
            "rows_per_request": self.rows,
            "sta_p50_ms": round(_pct(self.sta_ms, 50), 2),
            "sta_p99_ms": round(_pct(self.sta_ms, 99), 2),
            "sql_p50_ms": round(_pct(self.sql_ms, 50), 2),
            "sql_p99_ms": round(_pct(self.sql_ms, 99), 2),
            "requests": len(self.sta_ms),
        }
        if self.hand_ms:
            out["hand_sql_p50_ms"] = round(_pct(self.hand_ms, 50), 2)
            out["hand_sql_p99_ms"] = round(_pct(self.hand_ms, 99), 2)
        return out


def _timed_get(client: httpx.Client, url: str) -> tuple[float, dict[str, Any]]:
    t = time.perf_counter()
    r = client.get(url)
    elapsed = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
    return elapsed, r.json()


def _timed_sql(conn: psycopg.Connection, query: str, params: tuple[Any, ...]) -> float:
    t = time.perf_counter()
    conn.execute(query, params).fetchall()
    return (time.perf_counter() - t) * 1000


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_scenarios(
    client: httpx.Client, conn: psycopg.Connection, ds: Dataset, runs: int
) -> list[Result]:
    rng = random.Random(7)
    streams = sorted(ds.series)
    out: list[Result] = []

    def repeat(
        name: str,
        rows: int,
        make: Callable[[], tuple[str, str, tuple[Any, ...]]],
        hand: str | None = None,
    ) -> None:
        sta, plain, by_hand = [], [], []
        for _ in range(runs):
            url, query, params = make()
            sta.append(_timed_get(client, url)[0])
            plain.append(_timed_sql(conn, query, params))
            if hand is not None:
                by_hand.append(_timed_sql(conn, hand, params))
        out.append(Result(name, sta, plain, rows, by_hand))

    def latest() -> tuple[str, str, tuple[Any, ...]]:
        d = rng.choice(streams)
        return (
            f"/sta/v1.1/Datastreams('{d}')/Observations?$top=100&$orderby=phenomenonTime desc",
            "SELECT ts, value FROM readings WHERE series_id = %s ORDER BY ts DESC LIMIT 100",
            (ds.series[d],),
        )

    def time_range() -> tuple[str, str, tuple[Any, ...]]:
        d = rng.choice(streams)
        span = ds.last - ds.first - timedelta(hours=6)
        lo = ds.first + timedelta(seconds=rng.randrange(int(span.total_seconds())) // 60 * 60)
        hi = lo + timedelta(hours=6)
        flt = f"phenomenonTime ge {_iso(lo)} and phenomenonTime lt {_iso(hi)}"
        return (
            f"/sta/v1.1/Datastreams('{d}')/Observations?$top=1000&$filter={flt}",
            "SELECT ts, value FROM readings WHERE series_id = %s AND ts >= %s AND ts < %s"
            " ORDER BY ts LIMIT 1000",
            (ds.series[d], lo, hi),
        )

    def thing_merged() -> tuple[str, str, tuple[Any, ...]]:
        s = sensor_id(rng.randrange(ds.sensors))
        sids = [ds.series[f"{s}:{m}"] for m in METRICS]
        return (
            f"/sta/v1.1/Observations?$filter=Datastream/Thing/id eq '{s}'"
            "&$orderby=phenomenonTime desc&$top=100",
            "SELECT series_id, ts, value FROM readings WHERE series_id = ANY(%s)"
            " ORDER BY ts DESC, series_id LIMIT 100",
            (sids,),
        )

    def expand_latest() -> tuple[str, str, tuple[Any, ...]]:
        s = sensor_id(rng.randrange(ds.sensors))
        sids = [ds.series[f"{s}:{m}"] for m in METRICS]
        return (
            f"/sta/v1.1/Things('{s}')?$expand=Datastreams($expand=Observations($top=1;"
            "$orderby=phenomenonTime desc))",
            "SELECT s, l.ts, l.value FROM unnest(%s::int[]) s CROSS JOIN LATERAL"
            " (SELECT ts, value FROM readings WHERE series_id = s ORDER BY ts DESC LIMIT 1) l",
            (sids,),
        )

    repeat("newest 100 of a Datastream", 100, latest)
    repeat("6-hour range of a Datastream", 360, time_range)
    out.append(_deep_paging(client, conn, ds, rng))
    repeat("newest 100 of a Thing's 5 Datastreams (merged)", 100, thing_merged, MERGED_BY_HAND)
    repeat("$expand newest of each Datastream of a Thing", 5, expand_latest)
    return out


def _deep_paging(
    client: httpx.Client, conn: psycopg.Connection, ds: Dataset, rng: random.Random
) -> Result:
    """Walk a whole Datastream by @iot.nextLink, 1000 per page; time every page."""
    d = rng.choice(sorted(ds.series))
    sta: list[float] = []
    url: str | None = f"/sta/v1.1/Datastreams('{d}')/Observations?$top=1000&$orderby=phenomenonTime"
    total = 0
    while url:
        ms, body = _timed_get(client, url)
        sta.append(ms)
        total += len(body["value"])
        link = body.get("@iot.nextLink")
        url = link[link.index("/sta/") :] if link else None
    if total != ds.per_series:
        raise RuntimeError(f"paging returned {total} readings, expected {ds.per_series}")
    plain: list[float] = []
    last = datetime(1970, 1, 1, tzinfo=UTC)
    sid = ds.series[d]
    while True:
        t = time.perf_counter()
        rows = conn.execute(
            "SELECT ts, value FROM readings WHERE series_id = %s AND ts > %s"
            " ORDER BY ts LIMIT 1000",
            (sid, last),
        ).fetchall()
        plain.append((time.perf_counter() - t) * 1000)
        if len(rows) < 1000:
            break
        last = rows[-1][0]
    return Result(f"paging a whole Datastream ({ds.per_series:,}), per page", sta, plain, 1000)


def bench_sta(
    settings: Settings,
    *,
    sensors: int,
    readings: int,
    runs: int,
    reload: bool,
    cleanup: bool,
    as_json: bool,
) -> int:
    console = Console(stderr=as_json)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    ds = prepare(settings, sensors, readings, reload, console)
    port = procs.free_port()
    env = {**settings.env(), "MEETNET_LOG_LEVEL": "WARNING"}
    api = procs.spawn([sys.executable, "-m", "meetnet", "api", "--port", str(port)], env=env)
    results: list[Result] = []
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/sta/v1.1").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or api.poll() is not None:
                    raise RuntimeError("the API did not start")
                time.sleep(0.2)
            with connect(settings, app="bench-sta-sql", autocommit=True) as conn:
                conn.execute("SET TimeZone = 'UTC'")
                console.print(f"measuring {runs} requests per scenario")
                results = run_scenarios(client, conn, ds, runs)
    finally:
        procs.stop(api)
        if cleanup:
            with connect(settings, app="bench-sta", autocommit=True) as conn:
                _delete(conn)
    _print(results, ds, console)
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "rows": ds.rows,
                    "series": len(ds.series),
                    "results": [r.summary() for r in results],
                }
            )
            + "\n"
        )
    return 0


def _print(results: list[Result], ds: Dataset, console: Console) -> None:
    table = Table(
        title=f"SensorThings Observations on {ds.rows:,} readings ({len(ds.series)} series)"
    )
    for col in ("scenario", "STA p50", "STA p99", "SQL p50", "SQL p99", "p50 ratio"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for r in results:
        s = r.summary()
        ratio = s["sta_p50_ms"] / s["sql_p50_ms"] if s["sql_p50_ms"] else float("nan")
        table.add_row(
            r.name,
            f"{s['sta_p50_ms']:.1f} ms",
            f"{s['sta_p99_ms']:.1f} ms",
            f"{s['sql_p50_ms']:.2f} ms",
            f"{s['sql_p99_ms']:.2f} ms",
            f"{ratio:.1f}x",
        )
    console.print(table)
    for r in results:
        s = r.summary()
        if "hand_sql_p50_ms" in s:
            console.print(
                f"{r.name}, SQL written like the STA plan (per-series LIMIT, then merged):"
                f" p50 {s['hand_sql_p50_ms']:.2f} ms, p99 {s['hand_sql_p99_ms']:.2f} ms"
            )

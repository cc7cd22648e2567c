"""``meetnet bench ingest``: readings over MQTT until queryable, against the raw COPY ceiling.

What it does, in one run on one machine:

1. starts what it needs: unless the engines are external, a Mosquitto and a Kafka-protocol
   broker on free ports, then a gateway and a processor (real processes, as in production);
2. publishes N readings over MQTT, QoS 1, from publisher processes: ``batch`` mode sends
   gateway messages of many readings, ``single`` mode one reading per message;
3. polls the database every 100 ms for the newest stored instant of every series; each
   reading's ``ts`` is its publish time (ms), and a series is written in order, so a reading
   is queryable from the first poll whose newest instant of its series reaches its ``ts``;
4. counts what was stored: lost = published - stored, duplicates = rows - distinct keys;
5. measures, on the same database, the raw binary-COPY ceiling: the same number of rows,
   NumPy-encoded, COPYed in one transaction into an empty hypertable with the same unique
   index, with nothing else running;
6. reports readings/s end to end, latency percentiles, the ceiling, their ratio and the CPU
   seconds each component used; with ``--json`` the last line is one JSON object.

Its sensors are ``bench-<run>-<n>``, registered (with their gateways and a sensor type of the
run) before the run, and it deletes their rows and registry entries at the end. Its own brokers
run without MQTT authentication (the load generator is one connection for many sensors); the
gateway's registry checks apply as always.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from rich.console import Console
from rich.table import Table

from meetnet import procs, services
from meetnet.settings import Settings
from store.copy import encode_readings

log = logging.getLogger(__name__)
METRICS = ("pm25", "pm10", "no2", "temperature", "humidity")
SENSORS_PER_GATEWAY_MESSAGE = 20  # x 5 metrics = 100 readings per batch message
POLL_S = 0.1
STALL_S = 60.0
MAX_UNACKED = 5000


@dataclass(frozen=True)
class PublisherJob:
    host: str
    port: int
    prefix: str
    run: str
    sensors: list[int]  # global sensor indices this publisher owns
    n_sensors: int
    readings: int
    rate: float  # readings/s for this publisher, 0 = unbounded
    mode: str
    index: int


def _sensor_id(run: str, i: int) -> str:
    return f"bench-{run}-{i:05d}"


def _publish(job: PublisherJob, start_at: float, out: Any) -> None:
    """Publisher process: returns (series index, ts) of every reading through ``out``."""
    from meetnet.mqtt_load import LeanPublisher

    client = LeanPublisher(job.host, job.port, f"bench-{job.run}-pub-{job.index}")
    sensors = np.asarray(job.sensors, dtype=np.int64)
    n_metrics = len(METRICS)
    last = np.zeros((job.n_sensors, n_metrics), dtype=np.int64)
    series_out = np.empty(job.readings, dtype=np.int32)
    ts_out = np.empty(job.readings, dtype=np.int64)
    rng = np.random.default_rng(job.index)
    ids = {int(i): _sensor_id(job.run, int(i)) for i in sensors}
    topics = {i: f"{job.prefix}/sensors/{sid}" for i, sid in ids.items()}
    gw_topic = f"{job.prefix}/gateways/bench-{job.run}-gw-{job.index}"
    frags = {
        i: (
            f'{{"sensor":"{sid}","readings":['
            + ",".join(
                f'{{"metric":"{m}","ts":@TS@,"value":{v:.3f}}}'
                for m, v in zip(METRICS, rng.random(n_metrics) * 100, strict=True)
            )
            + "]}"
        ).encode()
        for i, sid in ids.items()
    }
    while time.time() < start_at:
        time.sleep(0.005)
    t0 = time.monotonic()
    done = 0
    cursor = 0  # position in (sensor, metric) round-robin
    while done < job.readings:
        if job.rate > 0:
            ahead = done / job.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        if client.sent - client.acked > MAX_UNACKED:
            client.wait_unacked_below(MAX_UNACKED // 2)
        now_ms = int(time.time() * 1000)
        if job.mode == "single":
            k = cursor % (len(sensors) * n_metrics)
            si, mi = int(sensors[k // n_metrics]), k % n_metrics
            ts = max(now_ms, int(last[si, mi]) + 1)
            last[si, mi] = ts
            payload = b'{"metric":"%s","ts":%d,"value":%.3f}' % (
                METRICS[mi].encode(),
                ts,
                rng.random() * 100,
            )
            client.publish(topics[si], payload)
            series_out[done] = si * n_metrics + mi
            ts_out[done] = ts
            done += 1
            cursor += 1
        else:
            take = min(SENSORS_PER_GATEWAY_MESSAGE, (job.readings - done) // n_metrics or 1)
            pos = (cursor + np.arange(take)) % len(sensors)
            group = sensors[pos]
            cursor += take
            # One instant per message, later than anything these series had: unique keys.
            ts_msg = max(now_ms, int(last[group].max()) + 1)
            last[group] = ts_msg
            tss = np.full((take, n_metrics), ts_msg, dtype=np.int64)
            # Pre-built per-sensor fragments: the publisher should cost the machine little,
            # so the figures measure the platform rather than the load generator.
            payload = (b'{"sensors":[' + b",".join(frags[int(i)] for i in group) + b"]}").replace(
                b"@TS@", b"%d" % ts_msg
            )
            client.publish(gw_topic, payload)
            n = take * n_metrics
            series_out[done : done + n] = (
                group[:, None] * n_metrics + np.arange(n_metrics)
            ).ravel()
            ts_out[done : done + n] = tss.ravel()
            done += n
    client.flush()
    t_end = time.time()
    with contextlib.suppress(TimeoutError):  # reported: published_acked is false
        client.wait_unacked_below(0, timeout=120)
    client.close()
    out.put((job.index, series_out, ts_out, client.sent, client.acked, t_end))


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _db_backend_pids(conn: psycopg.Connection, app: str) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def copy_ceiling(conn: psycopg.Connection, n: int, n_series: int, run: str) -> float:
    """Readings/s of one NumPy-encoded binary COPY into an empty twin of ``readings``."""
    table = f"bench_copy_{run}"
    conn.execute(
        psycopg.sql.SQL(
            "CREATE TABLE {} (series_id integer NOT NULL, ts timestamptz NOT NULL, "
            "value double precision NOT NULL)"
        ).format(psycopg.sql.Identifier(table))
    )
    try:
        conn.execute(
            "SELECT create_hypertable(%s, by_range('ts', INTERVAL '1 day'), "
            "create_default_indexes => false)",
            (table,),
        )
        conn.execute(
            psycopg.sql.SQL("CREATE UNIQUE INDEX ON {} (series_id, ts)").format(
                psycopg.sql.Identifier(table)
            )
        )
        now_us = int(time.time() * 1e6)
        idx = np.arange(n, dtype=np.int64)
        series = (idx % n_series).astype(np.int32)
        ts = now_us - 3_600_000_000 + (idx // n_series) * 1000
        values = np.random.default_rng(0).random(n) * 100
        t = time.perf_counter()
        buf = encode_readings(series, ts, values)
        with (
            conn.transaction(),
            conn.cursor().copy(
                psycopg.sql.SQL("COPY {} (series_id, ts, value) FROM STDIN (FORMAT BINARY)").format(
                    psycopg.sql.Identifier(table)
                )
            ) as cp,
        ):
            cp.write(buf)
        return n / (time.perf_counter() - t)
    finally:
        conn.execute(
            psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(psycopg.sql.Identifier(table))
        )


class _Poller(threading.Thread):
    """Every POLL_S: the newest stored ts (ms) of every bench series, with the poll time."""

    def __init__(self, dsn: str, run: str, since: float) -> None:
        super().__init__(daemon=True)
        self.dsn, self.run_id, self.since = dsn, run, since
        self.times: list[float] = []
        self.snapshots: list[dict[tuple[str, str], int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop_event.is_set():
                t = time.time()
                rows = conn.execute(
                    "SELECT s.sensor_id, s.metric, (extract(epoch FROM m.ts) * 1000)::bigint "
                    "FROM series s CROSS JOIN LATERAL (SELECT max(r.ts) AS ts FROM readings r "
                    "WHERE r.series_id = s.series_id AND r.ts >= to_timestamp(%s)) m "
                    "WHERE s.sensor_id LIKE %s AND m.ts IS NOT NULL",
                    (self.since, f"bench-{self.run_id}-%"),
                ).fetchall()
                self.times.append(time.time())
                self.snapshots.append({(a, b): int(c) for a, b, c in rows})
                self.stop_event.wait(max(0.0, POLL_S - (time.time() - t)))


def bench_ingest(
    settings: Settings,
    *,
    readings: int,
    mode: str,
    rate: float,
    sensors: int,
    as_json: bool,
    gateways: int = 1,
) -> int:
    console = Console(stderr=True)
    if not settings.manage_local_services and settings.mqtt_auth:
        console.print(
            "[red]bench ingest publishes for many sensors over one connection, which an "
            "authenticating broker does not allow: run it with its own brokers "
            "(MEETNET_MANAGE_LOCAL_SERVICES=true) or against a broker without authentication "
            "(MEETNET_MQTT_AUTH=false)[/]"
        )
        return 2
    run = uuid.uuid4().hex[:6]
    state = Path(tempfile.mkdtemp(prefix="meetnet-bench-"))
    local = settings.manage_local_services
    s = settings.model_copy(
        update={
            "state_dir": state,
            "mqtt_topic_prefix": f"bench-{run}/v1",
            "kafka_readings_topic": f"bench-{run}-readings",
            "kafka_deadletter_topic": f"bench-{run}-deadletter",
            "processor_group": f"bench-{run}-processor",
            "mqtt_share_group": f"bench-{run}",
            "gateway_client_id": f"bench-{run}-gw",
            **(
                {
                    "mqtt_url": f"mqtt://127.0.0.1:{procs.free_port()}",
                    "kafka_bootstrap": f"127.0.0.1:{procs.free_port()}",
                    "mqtt_auth": False,
                }
                if local
                else {}
            ),
        }
    )
    n_metrics = len(METRICS)
    sensors = max(1, min(sensors, readings // n_metrics or 1))
    n_pub = 2 if mode == "single" else 1
    console.print(
        f"[bold]meetnet bench ingest[/]: {readings:,} readings, mode={mode}, {sensors} sensors, "
        f"{n_pub} publisher process(es), rate={'max' if rate <= 0 else f'{rate:,.0f}/s'}, "
        + (
            "own brokers (MQTT without authentication)"
            if local
            else f"external brokers (MQTT {s.mqtt_url}, no authentication)"
        )
    )
    result: dict[str, Any] = {}
    workers: dict[str, Any] = {}
    registered = False
    try:
        with services.engines(s) as eng:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                _register(conn, run, sensors, n_pub)
                registered = True
            env = {**s.env(), "MEETNET_MANAGE_LOCAL_SERVICES": "false"}
            # Several gateways share the MQTT subscription (scale-out), each with its own id.
            for i in range(gateways):
                name = "gateway" if i == 0 else f"gateway-{i}"
                workers[name] = procs.spawn(
                    [sys.executable, "-m", "meetnet", "gateway"],
                    log=state / "logs" / f"{name}.log",
                    env={**env, "MEETNET_GATEWAY_CLIENT_ID": f"bench-{run}-gw-{i}"},
                )
            workers["processor"] = procs.spawn(
                [sys.executable, "-m", "meetnet", "processor"],
                log=state / "logs" / "processor.log",
                env=env,
            )
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                _warm_up(s, conn, run, console)
                result = _measure(
                    s,
                    conn,
                    run,
                    readings,
                    mode,
                    rate,
                    sensors,
                    n_pub,
                    workers,
                    dict(eng.procs),
                    console,
                )
                console.print("measuring the raw binary-COPY ceiling on the same database ...")
                for w in workers.values():
                    procs.stop(w)
                ceiling = copy_ceiling(conn, readings, sensors * n_metrics, run)
                _cleanup(conn, run)
    finally:
        for w in workers.values():
            procs.stop(w)
        if registered:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                _unregister(conn, run)
        if os.environ.get("MEETNET_BENCH_KEEP_LOGS"):
            console.print(f"logs kept in {state / 'logs'}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    result["copy_ceiling_per_s"] = round(ceiling, 1)
    result["ratio"] = round(result["readings_per_s"] / ceiling, 3) if ceiling else 0.0
    _print(result, console)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["lost"] == 0 and result["duplicates"] == 0 else 1


BENCH_MUNICIPALITY = "44021"


def _register(conn: psycopg.Connection, run: str, sensors: int, n_pub: int) -> None:
    """The run's sensor type, gateways (one per publisher) and sensors (publisher p owns
    sensors p, p + n_pub, ...), plus the warm-up sensor, in the registry."""
    type_id = f"bench-{run}"
    with conn.transaction():
        conn.execute(
            "INSERT INTO municipalities (nis_code, name) VALUES (%s, 'Gent') "
            "ON CONFLICT DO NOTHING",
            (BENCH_MUNICIPALITY,),
        )
        conn.execute("INSERT INTO sensor_types (type_id, name) VALUES (%s, %s)", (type_id, type_id))
        conn.execute(
            "INSERT INTO sensor_type_metrics (type_id, metric, unit, min_value, max_value, "
            "interval_s) SELECT %s, m, '1', -1e9, 1e9, 60 FROM unnest(%s::text[]) m",
            (type_id, list(METRICS)),
        )
        conn.execute(
            "INSERT INTO gateways (gateway_id, municipality) "
            "SELECT g, %s FROM unnest(%s::text[]) g",
            (BENCH_MUNICIPALITY, [f"bench-{run}-gw-{p}" for p in range(n_pub)]),
        )
        ids = [_sensor_id(run, i) for i in range(sensors)] + [f"warmup-{run}"]
        gws = [f"bench-{run}-gw-{i % n_pub}" for i in range(sensors)] + [None]
        conn.execute(
            "INSERT INTO sensors (sensor_id, municipality, type_id, gateway_id, lat, lon) "
            "SELECT s, %s, %s, g, 51.05, 3.72 FROM unnest(%s::text[], %s::text[]) AS u(s, g)",
            (BENCH_MUNICIPALITY, type_id, ids, gws),
        )


def _unregister(conn: psycopg.Connection, run: str) -> None:
    type_id = f"bench-{run}"
    with conn.transaction():
        conn.execute("DELETE FROM sensors WHERE type_id = %s", (type_id,))
        conn.execute("DELETE FROM gateways WHERE gateway_id LIKE %s", (f"bench-{run}-gw-%",))
        conn.execute("DELETE FROM sensor_types WHERE type_id = %s", (type_id,))


def _warm_up(s: Settings, conn: psycopg.Connection, run: str, console: Console) -> None:
    """One reading through the whole path: proves the gateway is subscribed and warms caches."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(s.mqtt_host, s.mqtt_port)
    c.loop_start()
    deadline = time.monotonic() + 60
    sid = f"warmup-{run}"
    try:
        while time.monotonic() < deadline:
            c.publish(
                f"{s.mqtt_topic_prefix}/sensors/{sid}",
                b'{"metric":"pm25","ts":%d,"value":1}' % int(time.time() * 1000),
                qos=1,
            ).wait_for_publish(5)
            t = time.monotonic()
            while time.monotonic() - t < 2:
                row = conn.execute(
                    "SELECT 1 FROM series s JOIN readings r USING (series_id) "
                    "WHERE s.sensor_id = %s LIMIT 1",
                    (sid,),
                ).fetchone()
                if row:
                    return
                time.sleep(0.05)
        raise RuntimeError(
            "the pipeline did not store a warm-up reading within 60 s; "
            "see the gateway/processor logs"
        )
    finally:
        c.loop_stop()
        c.disconnect()


def _measure(
    s: Settings,
    conn: psycopg.Connection,
    run: str,
    readings: int,
    mode: str,
    rate: float,
    sensors: int,
    n_pub: int,
    workers: dict[str, Any],
    engines: dict[str, Any],
    console: Console,
) -> dict[str, Any]:
    n_metrics = len(METRICS)
    own = [list(range(p, sensors, n_pub)) for p in range(n_pub)]
    per = [readings // n_pub + (1 if p < readings % n_pub else 0) for p in range(n_pub)]
    if mode == "batch":  # whole sensor ticks per message, so round to the metrics
        per = [max(n_metrics, (x // n_metrics) * n_metrics) for x in per]
    total = sum(per)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 1.0
    jobs = [
        PublisherJob(
            s.mqtt_host,
            s.mqtt_port,
            s.mqtt_topic_prefix,
            run,
            own[p],
            sensors,
            per[p],
            rate / n_pub if rate > 0 else 0.0,
            mode,
            p,
        )
        for p in range(n_pub)
    ]
    pubs = [ctx.Process(target=_publish, args=(j, start_at, out), daemon=True) for j in jobs]
    pids = {name: p.pid for name, p in {**engines, **workers}.items()}
    pg_pids = _db_backend_pids(conn, "meetnet-processor")
    cpu0 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    pg0 = sum(_cpu_seconds(p) for p in pg_pids)
    for p in pubs:
        p.start()
    poller = _Poller(s.dsn, run, start_at - 60)
    poller.start()
    results = []
    with console.status("publishing ...") as status:
        for _ in pubs:
            results.append(out.get(timeout=3600))
            status.update(f"publishers done: {len(results)}/{n_pub}")
        series = np.concatenate([r[1] for r in results])
        ts = np.concatenate([r[2] for r in results])
        t_pub_end = max(r[5] for r in results)
        # Newest ts per series: the pipeline is done when every series reached it.
        order = np.lexsort((ts, series))
        last_idx = np.r_[np.nonzero(np.diff(series[order]))[0], len(order) - 1]
        final = {int(series[order][i]): int(ts[order][i]) for i in last_idx}
        names = {(_sensor_id(run, k // n_metrics), METRICS[k % n_metrics]): k for k in final}
        last_progress, last_seen = time.monotonic(), -1
        while True:
            snap = poller.snapshots[-1] if poller.snapshots else {}
            reached = sum(1 for key, k in names.items() if snap.get(key, -1) >= final[k])
            status.update(f"waiting until queryable: {reached}/{len(final)} series complete")
            if reached == len(final):
                break
            if reached != last_seen:
                last_seen, last_progress = reached, time.monotonic()
            elif time.monotonic() - last_progress > STALL_S:
                console.print(f"[red]no progress for {STALL_S:.0f} s; counting what arrived[/]")
                break
            time.sleep(POLL_S)
    poller.stop_event.set()
    poller.join()
    cpu = {name: round(_cpu_seconds(pid) - cpu0[name], 2) for name, pid in pids.items()}
    cpu["postgres"] = round(sum(_cpu_seconds(p) for p in pg_pids) - pg0, 2)
    for p in pubs:
        p.join(timeout=10)
    stored, distinct = conn.execute(
        "SELECT count(*), count(DISTINCT (r.series_id, r.ts)) FROM readings r "
        "JOIN series s USING (series_id) WHERE s.sensor_id LIKE %s",
        (f"bench-{run}-%",),
    ).fetchone() or (0, 0)
    lat = _latencies(poller, names, series, ts)
    t_visible = float(lat["t_last_visible"]) if lat["t_last_visible"] else time.time()
    elapsed = t_visible - start_at
    return {
        "mode": mode,
        "readings": total,
        "messages": sum(r[3] for r in results),
        "sensors": sensors,
        "published_acked": sum(r[4] for r in results) == sum(r[3] for r in results),
        "lost": int(total - distinct),
        "duplicates": int(stored - distinct),
        "readings_per_s": round(distinct / elapsed, 1) if elapsed > 0 else 0.0,
        "publish_readings_per_s": round(total / (t_pub_end - start_at), 1),
        "p50_latency_s": lat["p50"],
        "p99_latency_s": lat["p99"],
        "max_latency_s": lat["max"],
        "elapsed_s": round(elapsed, 2),
        "rate_cap_per_s": rate,
        "cpu_s": cpu,
        "cores": os.cpu_count(),
    }


def _latencies(
    poller: _Poller, names: dict[tuple[str, str], int], series: np.ndarray, ts: np.ndarray
) -> dict[str, Any]:
    """Publish -> queryable for every reading, from the poll timeline of its series."""
    times = np.asarray(poller.times)
    visible = np.full(len(ts), np.nan)
    for key, k in names.items():
        newest = np.asarray([snap.get(key, -1) for snap in poller.snapshots], dtype=np.int64)
        newest = np.maximum.accumulate(newest) if len(newest) else newest
        mask = series == k
        pos = np.searchsorted(newest, ts[mask], side="left")
        ok = pos < len(times)
        v = np.full(mask.sum(), np.nan)
        v[ok] = times[pos[ok]]
        visible[mask] = v
    lat = visible - ts / 1000.0
    good = lat[~np.isnan(lat)]
    if len(good) == 0:
        return {"p50": None, "p99": None, "max": None, "t_last_visible": None}
    return {
        "p50": round(float(np.percentile(good, 50)), 3),
        "p99": round(float(np.percentile(good, 99)), 3),
        "max": round(float(good.max()), 3),
        "t_last_visible": float(np.nanmax(visible)),
    }


def _cleanup(conn: psycopg.Connection, run: str) -> None:
    like = f"bench-{run}-%"
    conn.execute(
        "DELETE FROM readings WHERE series_id IN (SELECT series_id FROM series WHERE sensor_id "
        "LIKE %s OR sensor_id = %s)",
        (like, f"warmup-{run}"),
    )
    conn.execute(
        "DELETE FROM series WHERE sensor_id LIKE %s OR sensor_id = %s", (like, f"warmup-{run}")
    )


def _print(r: dict[str, Any], console: Console) -> None:
    t = Table(title=f"meetnet bench ingest ({r['mode']})", show_header=False)
    rows = [
        (
            "readings",
            f"{r['readings']:,} in {r['messages']:,} MQTT messages, {r['sensors']} sensors",
        ),
        ("lost / duplicates", f"{r['lost']} / {r['duplicates']}"),
        (
            "end to end",
            f"{r['readings_per_s']:,.0f} readings/s (publish {r['publish_readings_per_s']:,.0f}/s)",
        ),
        (
            "publish -> queryable",
            f"p50 {r['p50_latency_s']} s, p99 {r['p99_latency_s']} s, max {r['max_latency_s']} s",
        ),
        (
            "binary COPY ceiling",
            f"{r['copy_ceiling_per_s']:,.0f} readings/s (same database, same run)",
        ),
        ("ratio", f"{r['ratio']:.2f}"),
        ("CPU seconds", ", ".join(f"{k} {v}" for k, v in r["cpu_s"].items())),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)

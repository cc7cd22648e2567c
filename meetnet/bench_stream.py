"""``meetnet bench stream``: the processor's pure path in isolation, then the path with the DB.

Workload: ``--sensors`` simulated air-quality sensors (``simulators.model``: five metrics each)
reporting every ``--interval-s`` seconds, each at its own phase within the interval and in a
fresh random order every tick, as one device message per sensor and tick. Every message goes
through the gateway's own validation and encoding (``wire.check_message``), so the record
values are byte for byte what the gateway puts on Kafka. They are cut into poll batches of
``--batch-records`` records (the processor's ``MEETNET_PROCESSOR_MAX_RECORDS``); the timestamps
end just before the start of the run, so no reading is late.

1. **Pure path**: the processor's stages (``stream.pipeline.standard_stages``: decode,
   validate -- with the registry check against in-memory registry frames that know the
   sensors --, series ids from a warm in-memory cache, dedupe, rollup deltas, COPY encoding) on
   every batch, in memory, no I/O. Readings/s per core = readings / CPU seconds of the process
   (``time.process_time``, all threads, so Polars' worker threads count); also per stage,
   the wall-clock rate and the number of threads Polars may use. One batch is run first,
   untimed, to warm Polars up.
2. **Full path** (unless ``--no-db``): the same batches through the stages *and* the writer
   (raw COPY, rollups, latest; one transaction per batch), with the processor's overlap: one
   task prepares batch k+1 while another writes batch k. Series ``bench-<run>-<n>`` are
   created on the first batch (included in the time) and everything of theirs (readings,
   rollups, latest, series) is deleted at the end. For scale, the raw binary-COPY ceiling of
   as many rows (``meetnet.bench.copy_ceiling``: readings only, no rollups, into an empty
   twin table) is measured afterwards on the same database.

With ``--json`` the last line of stdout is one JSON object with ``readings_per_s_per_core``,
``peak_rss_mb``, ``db_readings_per_s`` and the breakdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import resource
import sys
import time
import uuid
from typing import Any

import numpy as np
import polars as pl
import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from meetnet.bench import _cpu_seconds, _db_backend_pids, copy_ceiling
from meetnet.settings import Settings
from meetnet.wire import check_message
from simulators.model import METRICS, Encoder, make_fleet
from store.db import aconnect
from store.readings import ReadingsWriter
from stream.pipeline import Batch, run, standard_stages, with_series
from stream.rollups import LEVELS
from stream.validate import Limits, Registry

PREFIX = "bench"


def workload(
    run_id: str, sensors: int, ticks: int, interval_s: float, end_ms: int, seed: int = 7
) -> list[bytes]:
    """Kafka record values of ``ticks`` reports of every sensor, in arrival order."""
    fleet = make_fleet(sensors, seed=seed)
    fleet = dataclasses.replace(fleet, ids=tuple(f"bench-{run_id}-{i:05d}" for i in range(sensors)))
    enc = Encoder(fleet, PREFIX, "batch")
    rng = np.random.default_rng(seed)
    interval_ms = int(interval_s * 1000)
    phase = rng.integers(0, interval_ms, sensors)
    t0 = end_ms - ticks * interval_ms
    values: list[bytes] = []
    for k in range(ticks):
        idx = rng.permutation(sensors)
        ts = t0 + k * interval_ms + phase[idx]
        for topic, payload in enc.tick(idx, ts):
            acc = check_message(
                topic,
                payload,
                prefix=PREFIX,
                max_bytes=256 * 1024,
                max_readings=10_000,
                received_ms=int(ts.max()) + 50,
            )
            values.extend(v for _, _, v in acc.parts)
    return values


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm_cache(writer: ReadingsWriter, run_id: str, sensors: int) -> None:
    """The in-memory series cache of a processor that has seen these sensors before."""
    keys = [(f"bench-{run_id}-{i:05d}", m) for i in range(sensors) for m in METRICS]
    writer.series.frame = pl.DataFrame(
        {
            "sensor": [s for s, _ in keys],
            "metric": [m for _, m in keys],
            "series_id": np.arange(1, len(keys) + 1, dtype=np.int32),
        }
    )


def _registry(run_id: str, sensors: int) -> Registry:
    """The registry frames of a processor that knows these sensors and their metrics."""
    ids = [f"bench-{run_id}-{i:05d}" for i in range(sensors)]
    pairs = pl.DataFrame(
        {"sensor": [s for s in ids for _ in METRICS], "metric": [m for _ in ids for m in METRICS]}
    )
    return Registry.build(pl.DataFrame({"sensor": ids}), pairs)


def pure_path(batches: list[list[bytes]], now_ms: int, run_id: str, sensors: int) -> dict:
    writer = ReadingsWriter()
    _warm_cache(writer, run_id, sensors)
    registry = with_series(_registry(run_id, sensors), writer)  # as the processor builds it
    stages = standard_stages(Limits(90 * 86400 * 1000, 600_000), writer, lambda: registry)
    run(stages, Batch(batches[0], now_ms))  # warm-up, untimed
    rss0 = _rss_mb()
    seconds: dict[str, float] = {}
    n = deltas = 0
    c0, w0 = time.process_time(), time.perf_counter()
    for values in batches:
        b = run(stages, Batch(values, now_ms), seconds)
        assert b.rows is not None and b.deltas is not None, "every series is in the cache"
        n += len(b.rows)
        deltas += len(b.deltas)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {
        "readings": n,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "readings_per_s_per_core": round(n / cpu),
        "readings_per_s_wall": round(n / wall),
        "stages_cpu_s": {k: round(v, 4) for k, v in seconds.items()},
        "stages_readings_per_s_per_core": {k: round(n / v) for k, v in seconds.items() if v},
        "rollup_deltas": deltas,
        "rss_before_mb": round(rss0, 1),
    }


async def full_path(
    s: Settings,
    batches: list[list[bytes]],
    now_ms: int,
    run_id: str,
    sensors: int,
    console: Console,
) -> dict[str, Any]:
    writer = ReadingsWriter(late_horizon_s=s.rollup_late_horizon_s)
    limits = Limits(s.max_reading_age_s * 1000, s.max_clock_skew_s * 1000)
    registry = _registry(run_id, sensors)
    stages = standard_stages(limits, writer, lambda: registry)
    conn = await aconnect(s, app="bench-stream")
    queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=1)
    stored = 0
    db_s = 0.0

    async def sink() -> None:
        nonlocal stored, db_s
        while (b := await queue.get()) is not None:
            assert b.checked is not None
            t = time.perf_counter()
            ok = b.checked.ok.select("sensor", "metric", "ts_us", "value")
            res = await writer.write(conn, ok, now_ms * 1000, b.prepared)
            db_s += time.perf_counter() - t
            stored += res.inserted

    async with conn:
        pg = _backend_cpu(s)
        task = asyncio.create_task(sink())
        t0 = time.perf_counter()
        for i, values in enumerate(batches):
            await queue.put(run(stages, Batch(values, now_ms)))
            if i % 5 == 4:
                console.print(f"  full path: {i + 1}/{len(batches)} batches", highlight=False)
        await queue.put(None)
        await task
        wall = time.perf_counter() - t0
        pg_cpu = _backend_cpu(s) - pg
    return {
        "db_readings": stored,
        "db_wall_s": round(wall, 3),
        "db_readings_per_s": round(stored / wall),
        "db_write_s": round(db_s, 3),
        "postgres_cpu_s": round(pg_cpu, 2),
    }


def raw_copy_ceiling(s: Settings, n: int, n_series: int, run_id: str) -> float:
    """Readings/s of the bare raw COPY (no rollups) of as many rows, on the same database."""
    with psycopg.connect(s.dsn, autocommit=True) as conn:
        return copy_ceiling(conn, n, n_series, f"stream_{run_id}")


def _backend_cpu(s: Settings) -> float:
    with psycopg.connect(s.dsn, autocommit=True) as c:
        return sum(_cpu_seconds(p) for p in _db_backend_pids(c, "meetnet-bench-stream"))


def cleanup(s: Settings, run_id: str) -> None:
    with psycopg.connect(s.dsn, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT series_id FROM series WHERE sensor_id LIKE %s", (f"bench-{run_id}-%",)
            )
        ]
        if not ids:
            return
        tables = ["readings", "latest", "rollup_dirty", *(lv.table for lv in LEVELS)]
        for t in tables:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE series_id = ANY(%s)").format(sql.Identifier(t)),
                (ids,),
            )
        conn.execute("DELETE FROM series WHERE series_id = ANY(%s)", (ids,))


def bench_stream(
    settings: Settings,
    *,
    sensors: int,
    readings_n: int,
    interval_s: float,
    batch_records: int,
    db: bool,
    as_json: bool,
) -> int:
    console = Console(stderr=True)
    run_id = uuid.uuid4().hex[:6]
    per_tick = sensors * len(METRICS)
    ticks = max(1, readings_n // per_tick)
    now_ms = int(time.time() * 1000)
    console.print(
        f"[bold]meetnet bench stream[/]: {sensors:,} sensors x {len(METRICS)} metrics, "
        f"{ticks} reports each every {interval_s:g} s = {ticks * per_tick:,} readings, "
        f"batches of {batch_records:,} records"
    )
    t = time.perf_counter()
    values = workload(run_id, sensors, ticks, interval_s, now_ms - 1000)
    batches = [values[i : i + batch_records] for i in range(0, len(values), batch_records)]
    console.print(
        f"workload: {len(values):,} records, {sum(map(len, values)) / 1e6:.1f} MB "
        f"(built in {time.perf_counter() - t:.1f} s through the gateway's encoder)"
    )
    result: dict[str, Any] = {
        "sensors": sensors,
        "metrics": len(METRICS),
        "interval_s": interval_s,
        "batches": len(batches),
        "batch_records": batch_records,
        "polars_threads": pl.thread_pool_size(),
        "cores": os.cpu_count(),
    }
    console.print("pure path (decode -> validate -> series -> dedupe -> rollups -> encode) ...")
    result.update(pure_path(batches, now_ms, run_id, sensors))
    result["peak_rss_mb"] = round(_rss_mb(), 1)
    result["pipeline_rss_growth_mb"] = round(result["peak_rss_mb"] - result["rss_before_mb"], 1)
    if db:
        console.print("full path with the database ...")
        try:
            result.update(
                asyncio.run(full_path(settings, batches, now_ms, run_id, sensors, console))
            )
        finally:
            cleanup(settings, run_id)
        console.print("raw COPY ceiling (readings only, no rollups) on the same database ...")
        ceiling = raw_copy_ceiling(settings, result["readings"], sensors * len(METRICS), run_id)
        result["raw_copy_ceiling_per_s"] = round(ceiling)
        result["db_ratio_to_raw_copy"] = round(result["db_readings_per_s"] / ceiling, 3)
    else:
        result["db_readings_per_s"] = None
    _print(result, console)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _print(r: dict[str, Any], console: Console) -> None:
    t = Table(title="meetnet bench stream", show_header=False)
    t.add_row("readings", f"{r['readings']:,} in {r['batches']} batches of {r['batch_records']:,}")
    t.add_row(
        "pure path",
        f"{r['readings_per_s_per_core']:,} readings/s per core "
        f"({r['cpu_s']} CPU s; wall {r['readings_per_s_wall']:,}/s; "
        f"Polars threads {r['polars_threads']})",
    )
    for k, v in r["stages_readings_per_s_per_core"].items():
        t.add_row(f"  {k}", f"{v:,}/s per core ({r['stages_cpu_s'][k]} CPU s)")
    t.add_row("peak RSS", f"{r['peak_rss_mb']} MB (workload loaded: {r['rss_before_mb']} MB)")
    if r.get("db_readings_per_s") is not None:
        t.add_row(
            "full path with DB",
            f"{r['db_readings_per_s']:,} readings/s ({r['db_wall_s']} s; writer "
            f"{r['db_write_s']} s; PostgreSQL CPU {r['postgres_cpu_s']} s)",
        )
        t.add_row(
            "raw COPY ceiling",
            f"{r['raw_copy_ceiling_per_s']:,} readings/s without rollups "
            f"(ratio {r['db_ratio_to_raw_copy']})",
        )
    console.print(t)

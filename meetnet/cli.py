"""The ``meetnet`` command line. Each command imports what it needs only when it runs."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer

from meetnet import logs
from meetnet.settings import get_settings

app = typer.Typer(
    help="meetnet: IoT sensor data platform (MQTT, Kafka, stream processor, TimescaleDB, API).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print measured figures.", no_args_is_help=True)
rollups_app = typer.Typer(help="Rollup tables.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(bench_app, name="bench")
app.add_typer(rollups_app, name="rollups")


class Mode(StrEnum):
    batch = "batch"
    single = "single"


def _setup_logging() -> None:
    s = get_settings()
    logs.configure(s.log_level, s.log_format)


@app.command()
def up(
    simulate: Annotated[bool, typer.Option(help="Also run the sensor simulator.")] = True,
    sensors: Annotated[int, typer.Option(help="Simulated sensors.")] = 300,
    rate: Annotated[float, typer.Option(help="Simulated readings per second, all sensors.")] = 500,
    api_port: Annotated[int, typer.Option(help="Port of the query API.")] = 8000,
) -> None:
    """Start every component (and local engines unless configured external); Ctrl-C stops all."""
    _setup_logging()
    from meetnet.supervisor import run_up

    sys.exit(
        run_up(get_settings(), simulate=simulate, sensors=sensors, rate=rate, api_port=api_port)
    )


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations."""
    _setup_logging()
    from store.db import connect
    from store.migrate import migrate

    with connect(get_settings(), app="migrate", autocommit=True) as conn:
        done = migrate(conn)
    typer.echo(f"applied {len(done)} migration(s)" if done else "schema is up to date")


def _instant(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    from meetnet.wire import to_epoch_ms

    try:
        ms = to_epoch_ms(int(value) if value.isdigit() else value)
    except ValueError:
        raise typer.BadParameter(
            "expected RFC 3339 with an offset (2026-11-29T00:00:00Z) or epoch milliseconds",
            param_hint=option,
        ) from None
    return datetime.fromtimestamp(ms / 1000, UTC)


@rollups_app.command("rebuild")
def rollups_rebuild(
    since: Annotated[
        str | None, typer.Option(help="Start (RFC 3339 with offset); default: the oldest data.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End, exclusive; default: after the newest data.")
    ] = None,
    sensor: Annotated[
        list[str] | None, typer.Option(help="Only this sensor's series (repeatable).")
    ] = None,
) -> None:
    """Recompute rollup buckets from the raw readings (safe while processors run)."""
    _setup_logging()
    start, end = _instant(since, "--since"), _instant(until, "--until")
    if start and end and start >= end:
        raise typer.BadParameter("--since must be before --until")
    import asyncio

    from store.db import aconnect
    from store.rollups import rebuild

    async def _run() -> int:
        async with await aconnect(get_settings(), app="rollups-rebuild") as conn:
            series = None
            if sensor:
                cur = await conn.execute(
                    "SELECT series_id FROM series WHERE sensor_id = ANY(%s)", (sensor,)
                )
                series = [r[0] for r in await cur.fetchall()]
                await conn.commit()
                if not series:
                    raise typer.BadParameter(f"no series for sensor(s) {', '.join(sensor)}")

            def progress(t: datetime, _end: datetime, n: int) -> None:
                typer.echo(f"{t:%Y-%m-%d}: {n} bucket(s) recomputed so far", err=True)

            return await rebuild(conn, start, end, series, progress)

    n = asyncio.run(_run())
    typer.echo(f"recomputed {n} rollup bucket(s)")


@app.command()
def gateway() -> None:
    """Run the MQTT -> Kafka ingest gateway."""
    _setup_logging()
    from ingest.gateway import main as gateway_main

    gateway_main(get_settings())


@app.command()
def processor() -> None:
    """Run the stream processor (Kafka -> TimescaleDB)."""
    _setup_logging()
    from stream.processor import main as processor_main

    processor_main(get_settings())


@app.command()
def api(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Serve the query API."""
    _setup_logging()
    from api.main import serve

    serve(get_settings(), host=host, port=port, workers=workers)


@app.command()
def simulate(
    sensors: Annotated[int, typer.Option(help="Number of simulated sensors.")] = 100,
    rate: Annotated[float, typer.Option(help="Readings per second over all sensors.")] = 500,
    duration: Annotated[float, typer.Option(help="Seconds to run (0 = until Ctrl-C).")] = 0,
    mode: Annotated[
        Mode,
        typer.Option(help="batch: one message per sensor tick; single: one message per reading."),
    ] = Mode.batch,
    progress: Annotated[bool, typer.Option(help="Show a progress display.")] = True,
) -> None:
    """Publish plausible sensor readings over MQTT."""
    _setup_logging()
    from simulators.runner import run

    sys.exit(
        run(
            get_settings(),
            sensors=sensors,
            rate=rate,
            duration=duration,
            mode=mode.value,
            progress=progress,
        )
    )


@bench_app.command("ingest")
def bench_ingest(
    readings: Annotated[int, typer.Option(help="Readings to publish.")] = 200_000,
    mode: Annotated[
        Mode,
        typer.Option(
            help="batch: gateway messages of many readings; single: one reading per message."
        ),
    ] = Mode.batch,
    rate: Annotated[
        float, typer.Option(help="Publish rate cap in readings/s (0 = as fast as possible).")
    ] = 0,
    sensors: Annotated[int, typer.Option(help="Distinct sensors.")] = 500,
    gateways: Annotated[
        int, typer.Option(help="Gateway processes on the shared subscription.")
    ] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="End with one JSON line of results.")
    ] = False,
) -> None:
    """Publish N readings over MQTT, wait until all are queryable, report speed and loss."""
    _setup_logging()
    from meetnet.bench import bench_ingest as run_bench

    sys.exit(
        run_bench(
            get_settings(),
            readings=readings,
            mode=mode.value,
            rate=rate,
            sensors=sensors,
            as_json=as_json,
            gateways=max(1, gateways),
        )
    )


@bench_app.command("stream")
def bench_stream(
    sensors: Annotated[int, typer.Option(help="Simulated sensors (5 metrics each).")] = 10_000,
    readings: Annotated[
        int, typer.Option(help="Readings in the workload (rounded down to whole ticks).")
    ] = 2_000_000,
    interval_s: Annotated[float, typer.Option(help="Seconds between a sensor's reports.")] = 60,
    batch_records: Annotated[
        int, typer.Option(help="Kafka records per poll batch (one record per message).")
    ] = 20_000,
    db: Annotated[bool, typer.Option(help="Also run the full path with the database.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="End with one JSON line of results.")
    ] = False,
) -> None:
    """The processor's pure path on in-memory batches (readings/s per core), then with the DB."""
    _setup_logging()
    from meetnet.bench_stream import bench_stream as run_bench

    sys.exit(
        run_bench(
            get_settings(),
            sensors=max(1, sensors),
            readings_n=max(1, readings),
            interval_s=interval_s,
            batch_records=max(1, batch_records),
            db=db,
            as_json=as_json,
        )
    )


def main() -> None:
    app()

"""The ``meetnet`` command line. Each command imports what it needs only when it runs."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
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
k8s_app = typer.Typer(help="Kubernetes manifests (k8s/).", no_args_is_help=True)
admin_app = typer.Typer(help="Operator tasks: API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(bench_app, name="bench")
app.add_typer(rollups_app, name="rollups")
app.add_typer(admin_app, name="admin")
app.add_typer(k8s_app, name="k8s")


class KeyRole(StrEnum):
    admin = "admin"
    municipality = "municipality"
    reader = "reader"


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
    gateways: Annotated[
        int, typer.Option(min=1, help="Gateway processes on the MQTT shared subscription.")
    ] = 1,
    processors: Annotated[
        int,
        typer.Option(
            min=1, help="Processor processes in the consumer group (more than partitions idle)."
        ),
    ] = 1,
    api_workers: Annotated[int, typer.Option(min=1, help="Query API worker processes.")] = 1,
) -> None:
    """Start every component (and local engines unless configured external); Ctrl-C stops all."""
    _setup_logging()
    from meetnet.supervisor import run_up

    sys.exit(
        run_up(
            get_settings(),
            simulate=simulate,
            sensors=sensors,
            rate=rate,
            api_port=api_port,
            gateways=gateways,
            processors=processors,
            api_workers=api_workers,
        )
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


@app.command("broker-auth")
def broker_auth(
    once: Annotated[
        bool, typer.Option(help="Write the files once and exit (before Mosquitto starts).")
    ] = False,
) -> None:
    """Keep Mosquitto's password and ACL files in sync with the registry (SIGHUP on change)."""
    _setup_logging()
    from ingest.broker_auth import main as broker_auth_main
    from ingest.broker_auth import prepare

    if once:
        prepare(get_settings())
    else:
        broker_auth_main(get_settings())


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


@app.command()
def detect(
    input_csv: Annotated[
        Path, typer.Option("--input", "-i", help="CSV with columns timestamp,value.")
    ],
    output_csv: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="CSV: the input rows + anomaly_score, is_anomaly, anomaly_kind."
        ),
    ],
    metric: Annotated[
        str,
        typer.Option(
            help="Metric name: its kind's defaults apply (pm25, no2, temperature, humidity, "
            "water_level, laeq, ...; others get the generic defaults)."
        ),
    ] = "value",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Thresholds, JSON or TOML: the schema of sensor_types.detection."
        ),
    ] = None,
    flags_json: Annotated[
        Path | None, typer.Option("--flags", help="Also write the flags (episodes) as JSON.")
    ] = None,
) -> None:
    """Run the stream processor's anomaly detector over one series (backtesting)."""
    from stream.detect.config import ConfigError, DetectionConfig, load_config_file
    from stream.detect.offline import InputError, read_csv, score_frame, summary
    from stream.detect.offline import flags_json as to_json

    t0 = time.perf_counter()
    try:
        cfg = load_config_file(config) if config else DetectionConfig()
        cfg.rules_for(metric)  # a bad override for this metric fails here, clearly
        scored = score_frame(read_csv(input_csv), metric=metric, config=cfg)
        scored.rows.write_csv(output_csv)
        if flags_json:
            flags_json.write_text(to_json(scored))
    except (InputError, ConfigError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{summary(scored)} ({time.perf_counter() - t0:.2f} s)", err=True)


@bench_app.command("detect")
def bench_detect(
    series: Annotated[int, typer.Option(help="Synthetic series per anomaly kind.")] = 40,
    readings: Annotated[int, typer.Option(help="Readings per series.")] = 4032,
    anomalies: Annotated[int, typer.Option(help="Injected anomalies per series.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same figures).")] = 7,
    sensors: Annotated[int, typer.Option(help="Sensors (x 5 metrics) of the cost run.")] = 10_000,
    perf: Annotated[bool, typer.Option(help="Also measure the cost per reading.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="End with one JSON line of results.")
    ] = False,
) -> None:
    """Detection quality (precision/recall per kind on labelled synthetic series) and cost."""
    from meetnet.bench_detect import QualitySpec
    from meetnet.bench_detect import bench_detect as run_bench

    spec = QualitySpec(series=series, readings=readings, anomalies=anomalies, seed=seed)
    sys.exit(run_bench(spec, perf=perf, as_json=as_json, sensors=sensors))


@k8s_app.command("check")
def k8s_check(
    overlay_dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Overlay directories (default: every k8s/overlays/*).", show_default=False
        ),
    ] = None,
    kubernetes_version: Annotated[
        str, typer.Option(help="Kubernetes version whose schemas the core objects must match.")
    ] = "",
    output: Annotated[
        Path | None, typer.Option(help="Also write each overlay's rendered manifests here.")
    ] = None,
) -> None:
    """Render each overlay (kubectl kustomize), validate it against the schemas and check
    meetnet's invariants; exit 1 with every problem named."""
    from meetnet import k8s

    version = kubernetes_version or k8s.KUBERNETES_VERSION
    failed = False
    for overlay in overlay_dirs or k8s.overlays():
        result = k8s.check(overlay, version)
        if output is not None and result.manifests:
            output.mkdir(parents=True, exist_ok=True)
            (output / f"{overlay.name}.yaml").write_text(result.manifests)
        if result.ok:
            secrets = ", ".join(sorted(result.secrets)) or "none"
            typer.echo(
                f"{overlay}: ok ({len(result.docs)} objects; Kubernetes {version} and operator "
                f"schemas; invariants) - Secrets to exist in the cluster: {secrets}"
            )
            continue
        failed = True
        typer.echo(f"{overlay}: {len(result.problems)} problem(s)", err=True)
        for p in result.problems:
            typer.echo(f"  {p}", err=True)
    sys.exit(1 if failed else 0)


@bench_app.command("sta")
def bench_sta(
    sensors: Annotated[int, typer.Option(help="Public bench sensors (5 Datastreams each).")] = 40,
    readings: Annotated[
        int, typer.Option(help="Readings per Datastream, one per minute ending now.")
    ] = 100_000,
    runs: Annotated[int, typer.Option(help="Requests per scenario.")] = 200,
    reload: Annotated[bool, typer.Option(help="Load the dataset again even if present.")] = False,
    cleanup: Annotated[bool, typer.Option(help="Delete the dataset afterwards.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="End with one JSON line of results.")
    ] = False,
) -> None:
    """SensorThings Observations queries on a large dataset, against plain SQL."""
    _setup_logging()
    from meetnet.bench_sta import bench_sta as run_bench

    sys.exit(
        run_bench(
            get_settings(),
            sensors=sensors,
            readings=readings,
            runs=runs,
            reload=reload,
            cleanup=cleanup,
            as_json=as_json,
        )
    )


@admin_app.command("create-key")
def admin_create_key(
    role: Annotated[KeyRole, typer.Option(help="What the key may do.")],
    municipality: Annotated[
        str | None, typer.Option(help="NIS code of the municipality (role municipality only).")
    ] = None,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help='Print {"key": ...} only.')] = False,
) -> None:
    """Create an API key in the database of MEETNET_DATABASE_URL (migrating it first if
    needed) and print it. The key is shown only now: it is stored as a hash."""
    _setup_logging()
    from meetnet.admin import AdminError, create_key

    try:
        row, key = create_key(get_settings(), role.value, municipality, name)
    except AdminError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"key": key}))
        return
    where = f" of municipality {row['municipality']}" if row["municipality"] else ""
    typer.echo(f"created {row['role']} key {row['key_id']}{where}; it is shown only now:")
    typer.echo(key)


@admin_app.command("revoke-key")
def admin_revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key id: mnk_<key id>_... .")],
) -> None:
    """Revoke an API key; API processes stop accepting it within MEETNET_API_KEY_CACHE_S."""
    _setup_logging()
    from meetnet.admin import AdminError, revoke_key

    try:
        row = revoke_key(get_settings(), key_id)
    except AdminError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    since = row["revoked_at"].isoformat()
    typer.echo(f"revoked key {row['key_id']} ({row['role']}), since {since}")


@admin_app.command("list-keys")
def admin_list_keys(
    include_revoked: Annotated[bool, typer.Option(help="Also revoked keys.")] = False,
) -> None:
    """List API keys (ids, roles, municipalities; never secrets)."""
    _setup_logging()
    from meetnet.admin import list_keys

    for row in list_keys(get_settings(), include_revoked):
        revoked = f" revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else ""
        muni = row["municipality"] or "-"
        typer.echo(f"{row['key_id']}  {row['role']:<12} {muni:<5}  {row['name']}{revoked}")


def main() -> None:
    app()

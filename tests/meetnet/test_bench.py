"""`meetnet bench ingest` end to end, small: it must count correctly (figures are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration

KEYS = {
    "readings",
    "lost",
    "duplicates",
    "readings_per_s",
    "p50_latency_s",
    "p99_latency_s",
    "copy_ceiling_per_s",
    "ratio",
}


@pytest.mark.parametrize(("mode", "gateways"), [("batch", 1), ("single", 2)])
def test_bench_ingest_reports_every_reading_stored_once_as_its_last_json_line(
    migrated_db: str, tmp_path: Path, mode: str, gateways: int
) -> None:
    env = {
        **os.environ,
        "MEETNET_DATABASE_URL": migrated_db,
        "MEETNET_STATE_DIR": str(tmp_path),
        "MEETNET_MANAGE_LOCAL_SERVICES": "true",
    }
    cmd = [
        sys.executable,
        "-m",
        "meetnet",
        "bench",
        "ingest",
        "--readings",
        "3000",
        "--sensors",
        "60",
        "--mode",
        mode,
        "--gateways",
        str(gateways),
        "--json",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.keys() >= KEYS
    assert result["readings"] == 3000
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    assert result["published_acked"] is True
    assert result["readings_per_s"] > 0 and result["copy_ceiling_per_s"] > 0
    assert 0 < result["p50_latency_s"] <= result["p99_latency_s"]
    # It cleans up after itself: no bench series remain.
    with psycopg.connect(migrated_db) as conn:
        row = conn.execute("SELECT count(*) FROM series WHERE sensor_id LIKE 'bench-%'").fetchone()
        registered = conn.execute(
            "SELECT (SELECT count(*) FROM sensors WHERE sensor_id LIKE 'bench-%' "
            "OR sensor_id LIKE 'warmup-%'), (SELECT count(*) FROM gateways WHERE gateway_id "
            "LIKE 'bench-%'), (SELECT count(*) FROM sensor_types WHERE type_id LIKE 'bench-%')"
        ).fetchone()
    assert row == (0,)
    assert registered == (0, 0, 0), "the run's registry entries remain"
    assert "MQTT without authentication" in out.stderr  # it says how its brokers run


STREAM_KEYS = {
    "readings_per_s_per_core",
    "peak_rss_mb",
    "db_readings_per_s",
    "stages_cpu_s",
    "polars_threads",
    "raw_copy_ceiling_per_s",
}


def test_bench_stream_reports_its_figures_as_the_last_json_line_and_cleans_up(
    db: psycopg.Connection, migrated_db: str
) -> None:
    env = {**os.environ, "MEETNET_DATABASE_URL": migrated_db}
    cmd = [sys.executable, "-m", "meetnet", "bench", "stream", "--sensors", "200"]
    cmd += ["--readings", "20000", "--batch-records", "1000", "--json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.keys() >= STREAM_KEYS
    assert result["readings"] == result["db_readings"] == 20000
    assert set(result["stages_cpu_s"]) >= {"decode", "validate", "rollups"}
    assert result["readings_per_s_per_core"] > 0 and result["db_readings_per_s"] > 0
    for table in ("series", "readings", "rollups_1m", "rollups_1d_local", "latest"):
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table

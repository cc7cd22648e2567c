"""`meetnet bench sta` end to end, tiny: it loads, measures every scenario and cleans up
(figures are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration

SCENARIOS = {
    "newest 100 of a Datastream",
    "6-hour range of a Datastream",
    "paging a whole Datastream (1,500), per page",
    "newest 100 of a Thing's 5 Datastreams (merged)",
    "$expand newest of each Datastream of a Thing",
}


def test_bench_sta_measures_every_scenario_and_removes_its_dataset(
    db: psycopg.Connection, migrated_db: str, tmp_path: Path
) -> None:
    env = {**os.environ, "MEETNET_DATABASE_URL": migrated_db, "MEETNET_STATE_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "meetnet", "bench", "sta", "--sensors", "2", "--readings",
           "1500", "--runs", "3", "--cleanup", "--json"]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rows"] == 2 * 5 * 1500 and result["series"] == 10
    assert {r["scenario"] for r in result["results"]} == SCENARIOS
    for r in result["results"]:
        assert 0 < r["sta_p50_ms"] <= r["sta_p99_ms"], r
        assert 0 < r["sql_p50_ms"] <= r["sql_p99_ms"], r
        assert r["requests"] >= 2, r
        merged = r["scenario"] == "newest 100 of a Thing's 5 Datastreams (merged)"
        assert ("hand_sql_p50_ms" in r) == merged, r
    row = db.execute(
        "SELECT (SELECT count(*) FROM sensors WHERE sensor_id LIKE 'bench-sta-%'),"
        " (SELECT count(*) FROM series WHERE sensor_id LIKE 'bench-sta-%'),"
        " (SELECT count(*) FROM sensor_types WHERE type_id = 'bench-sta')"
    ).fetchone()
    assert row == (0, 0, 0), "the run's dataset remains"

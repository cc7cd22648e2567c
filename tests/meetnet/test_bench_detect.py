"""``meetnet bench detect``: quality on a small fixed-seed set, and the cost run's figures."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from meetnet.bench_detect import QualitySpec, cost, quality
from meetnet.cli import app


def test_detection_quality_on_a_fixed_seed_set_meets_the_bar() -> None:
    scores = {
        s.kind: s for s in quality(QualitySpec(series=10, readings=4032, anomalies=8, seed=7))
    }
    assert all(s.truths == 80 for s in scores.values())
    # Bars a little below what this exact set gives (fixed seed: deterministic); the issue's
    # 0.9 target is measured by the bench on the larger default set.
    for kind in ("range", "flatline", "silence"):
        assert scores[kind].recall >= 0.95 and scores[kind].precision >= 0.95, scores[kind]
    assert scores["spike"].recall >= 0.8 and scores["spike"].precision >= 0.85, scores["spike"]
    assert scores["level_shift"].recall >= 0.75 and scores["level_shift"].precision >= 0.8
    assert scores["noise"].recall >= 0.85 and scores["noise"].precision >= 0.85


def test_the_cost_run_processes_every_reading() -> None:
    c = cost(sensors=100, per_batch=2, batches=3, warmup=48)
    assert c.series == 500 and c.readings == 3 * 2 * 500 and c.cpu_s > 0


def test_the_command_prints_the_table_and_a_json_line() -> None:
    res = CliRunner().invoke(
        app, ["bench", "detect", "--series", "2", "--readings", "2000", "--anomalies", "3",
              "--sensors", "50", "--json"],
    )  # fmt: skip
    assert res.exit_code in (0, 1), res.output  # 1 = a target not met on this tiny set
    lines = res.output.strip().splitlines()
    assert lines[1].split()[:3] == ["kind", "injected", "found"]
    out = json.loads(lines[-1])
    assert {q["kind"] for q in out["quality"]} == {
        "range",
        "spike",
        "level_shift",
        "flatline",
        "noise",
        "silence",
    }
    assert all(c["readings_per_s_per_core"] > 0 for c in out["cost"])

"""Silence by event time: the injected clock, the watermark, gaps found on arrival, clock jumps."""

from __future__ import annotations

import numpy as np
import polars as pl

from tests.stream.detect.support import MIN, T0, batch, detector, minutes, registry

SENSORS = [f"s{i:02d}" for i in range(20)]


def tick(k: int, sensors: list[str]) -> pl.DataFrame:
    """Minute k: one reading of each sensor."""
    return batch(sensors, np.full(len(sensors), T0 + k * MIN), np.full(len(sensors), 20.0 + k % 3))


def test_a_sensor_that_stops_is_flagged_silent_at_the_right_event_time_then_resolved() -> None:
    det = detector(registry(SENSORS))  # interval 60 s, silent after 3 x 60 s
    for k in range(10):
        assert det.process(tick(k, SENSORS), T0 + k * MIN).flags.height == 0
    quiet = SENSORS[1:]  # s00 stops after minute 9
    opened = []
    for k in range(10, 16):
        opened += det.process(tick(k, quiet), T0 + k * MIN).transitions.to_dicts()
    assert [(t["sensor"], t["kind"], t["transition"]) for t in opened] == [
        ("s00", "silence", "opened")
    ]
    assert opened[0]["at"] == pl.Series([T0 + 12 * MIN]).cast(pl.Datetime("us", "UTC"))[0]
    assert "expected every 60 s; silent after 3.0 min" in opened[0]["explanation"]
    back = det.process(tick(16, SENSORS), T0 + 16 * MIN)
    t = back.transitions.row(0, named=True)
    assert (t["transition"], t["anomaly_id"]) == ("resolved", opened[0]["anomaly_id"])
    assert t["ended_at"] == pl.Series([T0 + 16 * MIN]).cast(pl.Datetime("us", "UTC"))[0]
    assert "no reading for 7.0 min" in t["explanation"]


def test_the_clock_cannot_run_ahead_of_the_data_so_a_stalled_stream_flags_nothing() -> None:
    """When no sensor reports (a gateway or broker outage, a processor catching up), the
    watermark does not move, so the wall clock alone does not make every sensor silent."""
    det = detector(registry(SENSORS))
    for k in range(10):
        det.process(tick(k, SENSORS), T0 + k * MIN)
    empty = tick(0, SENSORS).clear()
    assert det.process(empty, T0 + 600 * MIN).flags.height == 0


def test_one_sensor_with_a_fast_clock_does_not_make_the_others_silent() -> None:
    det = detector(registry(SENSORS))
    for k in range(10):
        det.process(tick(k, SENSORS), T0 + k * MIN)
    fast = batch("s00", np.asarray([T0 + 19 * MIN]), np.asarray([20.0]))  # 9 min ahead
    own = det.process(fast, T0 + 10 * MIN).flags  # its own gap in event time, nobody else's
    assert own["sensor"].to_list() == ["s00"] and own["kind"].to_list() == ["silence"]
    assert det.process(tick(10, SENSORS[1:]), T0 + 20 * MIN).flags.height == 0


def test_a_gap_is_found_when_the_next_reading_arrives_without_a_clock() -> None:
    det = detector(registry(["s1"]))
    ts = np.r_[minutes(50), minutes(50, 70)]  # 20 minutes without readings
    res = det.process(batch("s1", ts, np.full(100, 20.0) + np.arange(100) % 3), None)
    f = res.flags.row(0, named=True)
    assert (f["kind"], f["state"]) == ("silence", "resolved")
    assert f["started_at"] == pl.Series([T0 + 49 * MIN]).cast(pl.Datetime("us", "UTC"))[0]
    assert f["ended_at"] == pl.Series([T0 + 70 * MIN]).cast(pl.Datetime("us", "UTC"))[0]
    assert res.transitions["transition"].to_list() == ["opened", "resolved"]


def test_a_stream_wide_clock_jump_restarts_silence_timers_instead_of_flagging_everyone() -> None:
    det = detector(registry(SENSORS))
    for k in range(10):
        det.process(tick(k, SENSORS), T0 + k * MIN)
    day = 24 * 60
    # the stream resumes a day later; sensors come back over a few minutes
    flags = []
    for k in range(4):
        back = SENSORS[: 5 * (k + 1)]
        flags.append(det.process(tick(day + k, back), T0 + (day + k) * MIN).flags)
    assert sum(f.height for f in flags) == 0
    assert det.process(tick(0, SENSORS).clear(), T0).stats["rows"] == 0
    # ... but a sensor that still does not report after the jump is silent after its allowance
    late = []
    for k in range(4, 10):
        late.append(det.process(tick(day + k, SENSORS[1:]), T0 + (day + k) * MIN).flags)
    silent = pl.concat([f for f in late if f.height])
    assert silent["sensor"].to_list() == ["s00"] and silent["kind"].to_list() == ["silence"]


def test_a_sensor_whose_own_clock_jumps_ahead_gets_one_gap_not_a_flood() -> None:
    det = detector(registry(["s1"]))
    ts = np.r_[minutes(50), minutes(50, 2000)]  # its clock leaps 32 hours ahead
    res = det.process(batch("s1", ts, np.full(100, 20.0) + np.arange(100) % 3), None)
    assert res.flags["kind"].to_list() == ["silence"]
    # readings with the true (older) time come in late: range-checked only, no new flags
    late = det.process(batch("s1", minutes(20, 50), np.full(20, 20.0)), None)
    assert late.flags.height == 0 and late.stats["rows"] == 20

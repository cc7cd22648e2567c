"""The streaming detector: each kind, the flag lifecycle, batching and restart equivalence."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from simulators.anomalies import PROFILES, labelled
from stream.detect import Detector, DetectorConfig, Structural
from tests.stream.detect.support import (
    MIN,
    T0,
    batch,
    detector,
    final,
    kinds,
    minutes,
    noisy,
    registry,
)


def test_out_of_range_readings_give_one_flag_that_grows_then_resolves() -> None:
    det = detector(registry(["s1"]))
    x = noisy(200)
    x[100:105] = 1500.0  # five readings above the physical maximum of 1000
    r1 = det.process(batch("s1", minutes(102), x[:102]), None)
    assert kinds(r1.flags) == ["range"]
    assert r1.transitions["transition"].to_list() == ["opened"]
    flag = r1.flags.row(0, named=True)
    assert flag["state"] == "open" and flag["n_readings"] == 2
    assert "above the physical maximum 1000" in flag["explanation"]

    r2 = det.process(batch("s1", minutes(98, 102), x[102:]), None)
    flag = r2.flags.row(0, named=True)
    assert flag["anomaly_id"] == r1.flags["anomaly_id"][0]  # the same flag, extended
    assert flag["state"] == "resolved" and flag["n_readings"] == 5
    assert flag["last_ts"] == pl.Series([T0 + 104 * MIN]).cast(pl.Datetime("us", "UTC"))[0]
    # resolved at the third clean reading after the last bad one (range.resolve_after = 3)
    assert flag["resolved_at"] == pl.Series([T0 + 107 * MIN]).cast(pl.Datetime("us", "UTC"))[0]
    assert r2.transitions["transition"].to_list() == ["resolved"]
    assert flag["severity"] == "high" and 0.5 <= flag["score"] <= 1


def test_a_clean_noisy_series_raises_no_flag() -> None:
    det = detector(registry(["s1"]))
    res = det.process(batch("s1", minutes(5000), noisy(5000, seed=3)), None)
    assert res.flags.height == 0


def test_spike_is_flagged_once_with_its_readings_and_baseline() -> None:
    det = detector(registry(["s1"]))
    x = noisy(400, seed=1)
    x[200:202] += 15.0
    flags = det.process(batch("s1", minutes(400), x), None).flags
    assert kinds(flags) == ["spike"]
    f = flags.row(0, named=True)
    assert f["n_readings"] == 2
    assert f["started_at"] == pl.Series([T0 + 200 * MIN]).cast(pl.Datetime("us", "UTC"))[0]
    assert abs(f["baseline"] - 20) < 2 and f["statistic"] > 6
    assert "spike to" in f["explanation"]


def test_flat_line_starts_at_the_first_stuck_reading_and_ends_when_the_value_moves() -> None:
    det = detector(registry(["s1"]))
    x = noisy(400, seed=2)
    x[150:190] = x[149]  # stuck for 40 readings after reading 149
    flags = det.process(batch("s1", minutes(400), x), None).flags
    assert kinds(flags) == ["flatline"]
    f = flags.row(0, named=True)
    assert f["started_at"] == pl.Series([T0 + 149 * MIN]).cast(pl.Datetime("us", "UTC"))[0]
    assert f["n_readings"] == 41 and f["state"] == "resolved"
    assert f["first_value"] == x[149]
    assert f"stuck at {x[149]:g}" in f["explanation"]


def test_level_shift_up_and_back_gives_two_shifts() -> None:
    det = detector(registry(["s1"]))
    x = noisy(600, seed=4)
    x[300:450] += 10.0
    flags = det.process(batch("s1", minutes(600), x), None).flags
    assert kinds(flags) == ["level_shift", "level_shift"]
    starts = flags["started_at"].dt.epoch("us").to_list()
    assert starts == [T0 + 300 * MIN, T0 + 450 * MIN]
    assert flags["statistic"][0] > 4 and flags["statistic"][1] < -4


def test_a_burst_of_noise_is_flagged_as_noise() -> None:
    det = detector(registry(["s1"]))
    x = noisy(800, seed=5)
    x[400:520] += np.random.default_rng(9).normal(0, 6, 120)
    flags = det.process(batch("s1", minutes(800), x), None).flags
    noise = flags.filter(pl.col("kind") == "noise")
    assert noise.height == 1
    lo, hi = noise["started_at"].dt.epoch("us")[0], noise["last_ts"].dt.epoch("us")[0]
    assert T0 + 400 * MIN <= lo <= T0 + 460 * MIN and hi <= T0 + 540 * MIN


def test_flags_do_not_depend_on_how_the_readings_are_batched() -> None:
    """One batch, 60 random batches, and 1024-row chunks give the same flags."""
    p = PROFILES["no2"]
    s = labelled(p, 6000, ["spike", "flatline", "range", "level_shift", "noise", "silence"], 12, 1)
    reg = registry(["a"], "no2", low=p.low, high=p.high, interval_s=p.interval_s)
    b = batch("a", s.ts_us, s.values, "no2")
    whole = final([detector(reg).process(b, None)])
    assert set(whole["kind"]) >= {"spike", "flatline", "range", "silence"}
    det = detector(reg)
    cuts = np.sort(np.random.default_rng(2).choice(b.height, 60, replace=False))
    pieces = final([det.process(b[idx], None) for idx in np.split(np.arange(b.height), cuts)])
    chunked = detector(reg, DetectorConfig(structural=Structural(max_chunk_rows=1024)))
    assert pieces.equals(whole)
    assert final([chunked.process(b, None)]).equals(whole)


def test_detection_after_a_restore_is_the_same_as_without_a_restart() -> None:
    """Straight through vs. snapshot/restore after every batch of a many-sensor stream."""
    sensors = [f"s{i}" for i in range(12)]
    p = PROFILES["pm25"]
    series = [
        labelled(p, 3000, ["spike", "flatline", "range", "silence"], 5, seed=i) for i in range(12)
    ]
    frames = [batch(s, x.ts_us, x.values) for s, x in zip(sensors, series, strict=True)]
    stream = pl.concat(frames).sort("ts_us")
    reg = registry(sensors, interval_s=p.interval_s)
    parts = np.array_split(np.arange(stream.height), 25)
    now = [int(stream["ts_us"][int(idx[-1])]) for idx in parts]

    straight = detector(reg)
    a = [straight.process(stream[idx], t) for idx, t in zip(parts, now, strict=True)]
    blob = None
    b = []
    for idx, t in zip(parts, now, strict=True):
        det = detector(reg) if blob is None else Detector.restore(blob)
        b.append(det.process(stream[idx], t))
        blob = det.snapshot()
    assert final(b).equals(final(a))
    # the alerts, batch by batch, are the same too
    for ra, rb in zip(a, b, strict=True):
        assert ra.transitions.equals(rb.transitions)


def test_the_series_id_path_and_the_string_key_path_agree() -> None:
    reg = registry(["a", "b"]).with_columns(series_id=pl.Series([7, 3]))
    x = noisy(300)
    x[100] = 2000
    x[200:230] = 5.0
    b = pl.concat([batch("a", minutes(300), x), batch("b", minutes(300), x[::-1].copy())])
    by_id = detector(reg).process(b.join(reg.select("sensor", "metric", "series_id"),
                                         on=["sensor", "metric"]), None).flags  # fmt: skip
    by_key = detector(reg).process(b, None).flags
    assert by_id.equals(by_key)
    assert sorted(by_id["series_id"].unique().to_list()) == [3, 7]


def test_per_type_thresholds_apply_to_their_series_only() -> None:
    loose = '{"spike": {"z": 50}, "metrics": {"pm25": {"flatline": {"min_readings": 100}}}}'
    reg = pl.concat([registry(["strict"]), registry(["loose"], detection=loose)])
    x = noisy(400, seed=1)
    x[200] += 15.0
    x[300:340] = x[299]
    b = pl.concat([batch("strict", minutes(400), x), batch("loose", minutes(400), x)])
    flags = detector(reg).process(b, None).flags
    got = sorted(zip(flags["sensor"], flags["kind"], strict=True))
    assert got == [("strict", "flatline"), ("strict", "spike")]
    assert flags["config_version"].n_unique() == 1  # only the strict type's version appears


def test_an_unknown_structural_setting_in_a_snapshot_is_refused_clearly() -> None:
    det = detector(registry(["s1"]))
    det.process(batch("s1", minutes(50), noisy(50)), None)
    blob = det.snapshot()
    with pytest.raises(ValueError, match="other structural settings"):
        Detector.restore(blob, DetectorConfig(structural=Structural(noise_blocks=8)))
    with pytest.raises(ValueError, match="not a detector snapshot"):
        Detector.restore(b"not a snapshot")


def test_a_series_id_seen_first_in_a_batch_keeps_the_registry_s_thresholds() -> None:
    """The registry is read before the database has created a new series' id."""
    det = detector(registry(["s1"], low=10.0, high=30.0, interval_s=60.0))
    x = noisy(100)
    x[50] = 35.0  # above this sensor's range (30), fine for pm25's defaults (1000)
    b = batch("s1", minutes(100), x).with_columns(series_id=pl.lit(42, dtype=pl.Int64))
    flags = det.process(b, None).flags
    assert kinds(flags) == ["range"] and flags["series_id"][0] == 42
    assert int(det.st.allowed_us[0]) == 180_000_000  # the registry's interval, still


def test_a_bad_detection_document_in_the_registry_falls_back_to_the_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    det = detector(registry(["s1"], detection='{"spike": {"zz": 1}}'))
    [record] = [r for r in caplog.records if "bad detection config" in r.getMessage()]
    assert "spike.zz" in record.error  # type: ignore[attr-defined]
    x = noisy(400, seed=1)
    x[200] += 15.0
    assert kinds(det.process(batch("s1", minutes(400), x), None).flags) == ["spike"]

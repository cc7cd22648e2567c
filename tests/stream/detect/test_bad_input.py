"""Bad input does not crash the detector, poison its state or grow it."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from stream.detect import Detector
from tests.stream.detect.support import batch, detector, final, kinds, minutes, noisy, registry


def spiky(n: int = 400) -> np.ndarray:
    x = noisy(n, seed=1)
    x[200:202] += 15.0
    return x


def test_nan_and_infinite_values_are_ignored_and_do_not_poison_the_series() -> None:
    x = spiky()
    dirty = x.copy()
    dirty[[10, 50, 51, 150, 199]] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
    clean = detector(registry(["s1"])).process(batch("s1", minutes(400), x), None)
    det = detector(registry(["s1"]))
    res = det.process(batch("s1", minutes(400), dirty), None)
    assert res.stats["nonfinite"] == 5
    assert kinds(res.flags) == kinds(clean.flags) == ["spike"]
    assert np.isfinite(det.st.bk_scale[0]) and np.isfinite(det.st.ering[0]).all()


def test_shuffled_and_duplicated_readings_give_the_same_flags_as_ordered_ones() -> None:
    x = spiky()
    x[300:330] = x[299]
    ordered = batch("s1", minutes(400), x)
    rng = np.random.default_rng(0)
    messy = pl.concat([ordered, ordered.sample(100, seed=1)])  # 100 duplicates
    messy = messy[rng.permutation(messy.height)]
    a = final([detector(registry(["s1"])).process(ordered, None)])
    b = final([detector(registry(["s1"])).process(messy, None)])
    assert kinds(a) == ["flatline", "spike"] or kinds(a) == ["spike", "flatline"]
    assert b.equals(a)


def test_a_replayed_batch_adds_no_flag_and_late_readings_are_only_range_checked() -> None:
    det = detector(registry(["s1"]))
    x = spiky()
    x[100] = 5000.0
    b = batch("s1", minutes(400), x)
    first = det.process(b, None)
    assert sorted(kinds(first.flags)) == ["range", "spike"]
    again = det.process(b, None)  # e.g. Kafka redelivers after a crash before the commit
    assert again.flags.height == 0 and again.transitions.height == 0
    late = batch("s1", minutes(3, 50) + 30_000_000, np.asarray([21.0, -7.0, 22.0]))
    res = det.process(late, None)  # half a minute off: between earlier readings
    assert kinds(res.flags) == ["range"] and res.flags["state"][0] == "resolved"


def test_readings_of_unknown_series_are_detected_with_the_metric_s_defaults() -> None:
    det = detector(registry(["known"]))
    x = noisy(300)
    x[100] = -3.0  # below pm25's physical minimum (0) from the metric defaults
    b = pl.concat([batch("stranger", minutes(300), x), batch("stranger", minutes(3), x[:3], "zzz")])
    res = det.process(b, None)
    assert res.stats["new_series"] == 2
    assert kinds(res.flags) == ["range"] and res.flags["sensor"][0] == "stranger"
    # no expected interval is known for them: a long gap is not called silence
    gap = det.process(batch("stranger", minutes(10, 5000), noisy(10)), None)
    assert gap.flags.height == 0


def test_a_million_readings_of_one_sensor_keep_the_state_size_and_detect_as_usual() -> None:
    det = detector(registry(["s1", "s2"]))
    det.process(batch(["s1", "s2"], minutes(2), np.asarray([20.0, 20.0])), None)
    size = {k: v.nbytes for k, v in det.st.a.items()}
    snap = len(det.snapshot())
    n = 1_000_000
    x = noisy(n, seed=7)
    x[500_000] += 20.0
    res = det.process(batch("s1", minutes(n, 2), x), None)
    assert {k: v.nbytes for k, v in det.st.a.items()} == size
    assert len(det.snapshot()) < snap + 20_000  # a few compressed numbers more, not readings
    assert int(det.st.n_acc[det.st.keys.filter(pl.col("sensor") == "s1")["idx"][0]]) == n + 1
    spikes = res.flags.filter(pl.col("kind") == "spike")
    assert spikes.height >= 1
    assert (spikes["started_at"].dt.epoch("us") == int(minutes(1, 500_002)[0])).any()


def test_a_batch_without_the_required_columns_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        Detector().process(pl.DataFrame({"sensor": ["a"], "value": [1.0]}), None)

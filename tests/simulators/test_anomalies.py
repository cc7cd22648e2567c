"""The labelled-anomaly injector: deterministic, truthful labels, and the matching rule."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.anomalies import KINDS, PROFILES, Magnitudes, base_series, inject, labelled, match


def test_the_same_seed_gives_the_same_series_and_labels() -> None:
    a = labelled(PROFILES["no2"], 3000, KINDS, 5, seed=11)
    b = labelled(PROFILES["no2"], 3000, KINDS, 5, seed=11)
    assert np.array_equal(a.ts_us, b.ts_us) and np.array_equal(a.values, b.values)
    assert a.labels == b.labels
    assert not np.array_equal(a.values, labelled(PROFILES["no2"], 3000, KINDS, 5, seed=12).values)


def test_a_clean_series_has_its_cycles_noise_resolution_and_range() -> None:
    p = PROFILES["temperature"]
    s = base_series(p, 7 * 1440, np.random.default_rng(0))  # a week at 1 min
    assert np.all(np.diff(s.ts_us) > 0)
    assert np.array_equal(s.values, np.round(s.values, 2))
    assert p.low <= s.values.min() and s.values.max() <= p.high
    hours = (s.ts_us // 3_600_000_000) % 24
    by_hour = np.array([s.values[hours == h].mean() for h in range(24)])
    assert by_hour.argmax() in (13, 14, 15, 16) and np.ptp(by_hour) > 4  # afternoon peak


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_does_what_its_label_says(kind: str) -> None:
    p = PROFILES["pm25"]
    rng = np.random.default_rng(3)
    clean = base_series(p, 4000, rng)
    s = inject(clean, p, [kind], 6, rng)
    assert len(s.labels) == 6 and {lb.kind for lb in s.labels} == {kind}
    for lb in s.labels:
        inside = (s.ts_us >= lb.start_us) & (s.ts_us <= lb.end_us)
        before = clean.values[np.searchsorted(clean.ts_us, lb.start_us) - 1]
        if kind == "range":
            assert ((s.values[inside] > p.high) | (s.values[inside] < p.low)).all()
        elif kind == "flatline":
            assert (s.values[inside] == before).all() and inside.sum() >= 30
        elif kind == "silence":
            assert not inside.any()  # the readings are gone
        elif kind in ("spike", "level_shift"):
            c = (clean.ts_us >= lb.start_us) & (clean.ts_us <= lb.end_us)
            assert np.abs(s.values[inside] - clean.values[c]).min() >= 5 * p.sd
        else:
            c = (clean.ts_us >= lb.start_us) & (clean.ts_us <= lb.end_us)
            assert np.std(s.values[inside] - clean.values[c]) > 3 * p.sd
    outside = np.ones(len(s.ts_us), dtype=bool)
    for lb in s.labels:
        outside &= ~((s.ts_us >= lb.start_us) & (s.ts_us <= lb.end_us))
    keep = np.isin(clean.ts_us, s.ts_us[outside])
    assert np.array_equal(clean.values[keep], s.values[outside])  # untouched elsewhere


def test_magnitudes_are_configurable_and_impossible_requests_are_refused() -> None:
    p = PROFILES["pm25"]
    rng = np.random.default_rng(0)
    s = inject(base_series(p, 3000, rng), p, ["flatline"], 3, rng,
               magnitudes=Magnitudes(flat_len=(200, 200)))  # fmt: skip
    assert all(round((lb.end_us - lb.start_us) / 300e6) == 199 for lb in s.labels)
    with pytest.raises(ValueError, match="hold at most"):
        inject(base_series(p, 1000, rng), p, ["spike"], 10, rng)
    with pytest.raises(ValueError, match="unknown anomaly kinds"):
        inject(base_series(p, 3000, rng), p, ["meteor"], 1, rng)


def test_event_matching_widens_the_truth_by_the_tolerance() -> None:
    truth = [(100, 110), (500, 500)]
    assert match("spike", truth, [(112, 115)], tolerance_us=2) == (1, 1)
    assert match("spike", truth, [(113, 115)], tolerance_us=2) == (0, 0)
    assert match("spike", truth, [(90, 600)], tolerance_us=0) == (2, 1)  # one flag, two found
    assert match("spike", truth, [(105, 106), (107, 108), (900, 901)], tolerance_us=0) == (1, 2)
    assert match("spike", [], [(1, 2)], tolerance_us=0) == (0, 0)

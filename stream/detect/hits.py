"""What the per-kind detectors hand to the episode tracker, and the score scale."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.detect.segments import B1, F8, I8

RANGE, SPIKE, SHIFT, FLAT, NOISE, SILENCE = range(6)  # the order of config.KINDS
_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float64)
# Offline runs collect the readings each detection concerns: (sid, kind, first ts, last ts).
Events = list[tuple[I8, int, I8, I8]] | None


def to_score(r: F8) -> F8:
    """Statistic / threshold -> score in [0, 1): 0.5 at the threshold, 0.75 at twice it."""
    return 1.0 - np.exp2(-np.maximum(r, 0.0))


@dataclass
class Hits:
    """Input of one kind's episode tracking: the domain rows in order, which are hits, and
    what each hit contributes (arrays per hit, in row order)."""

    sid: I8
    ts: I8
    hit: B1
    h_start: I8  # start of the condition (e.g. where the flat line began)
    h_last: I8  # last reading concerned
    pts: I8  # time of the reading the score was measured on
    score: F8
    stat: F8
    x: F8
    base: F8
    n_inc: I8  # readings the hit adds to the episode


def no_hits(sid: I8, ts: I8) -> Hits:
    e, f = _EMPTY_I, _EMPTY_F
    return Hits(sid, ts, np.zeros(len(sid), dtype=np.bool_), e, e, e, f, f, f, f, e)


@dataclass
class Gaps:
    """Silence found on arrival: no reading of ``sid`` in (prev_ts, ts)."""

    sid: I8
    prev_ts: I8
    ts: I8
    prev_x: F8
    resumes: B1  # the series had an open silence episode, which this reading resolves
    flag: B1  # the gap itself is longer than allowed (not only the end of an open silence)

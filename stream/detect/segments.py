"""Segmented array helpers: per-series work on rows sorted by series, without a loop per series.

Rows are sorted by (series, time); a *segment* is the contiguous rows of one series. State
carried from earlier batches enters at each segment's first row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

I8 = npt.NDArray[np.int64]
F8 = npt.NDArray[np.float64]
B1 = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Seg:
    first: B1  # row starts a segment
    s0: I8  # each row's segment start row
    s1: I8  # each row's segment last row
    starts: I8  # start row of each segment
    ends: I8  # last row of each segment

    @property
    def n(self) -> int:
        return len(self.first)


def segments(key: npt.NDArray[Any]) -> Seg:
    n = len(key)
    first = np.ones(n, dtype=np.bool_)
    if n > 1:
        first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    ends = np.empty_like(starts)
    if len(starts):
        ends[:-1] = starts[1:] - 1
        ends[-1] = n - 1
    seg_of = np.cumsum(first) - 1
    return Seg(first, starts[seg_of], ends[seg_of], starts, ends)


def ffill_index(mask: B1, s0: I8) -> I8:
    """For each row, the last row <= it (same segment) where ``mask`` holds, else -1."""
    idx = np.where(mask, np.arange(len(mask), dtype=np.int64), -1)
    np.maximum.accumulate(idx, out=idx)
    idx[idx < s0] = -1
    return idx


def shifted(values: npt.NDArray[Any], seg: Seg, at_first: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The previous row's value within the segment; ``at_first`` (per row) at segment starts."""
    out = np.empty_like(values)
    if len(values):
        out[1:] = values[:-1]
        out[seg.first] = at_first[seg.first]
    return out


def group_starts(gid: I8) -> I8:
    """Start positions of runs of equal values in a sorted id array."""
    if len(gid) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])


def group_argmax(values: F8, starts: I8) -> I8:
    """Position of the first maximum of each group (groups given by their start positions)."""
    peak = np.maximum.reduceat(values, starts)
    counts = np.diff(np.r_[starts, len(values)])
    hit = np.flatnonzero(values == np.repeat(peak, counts))
    grp = np.searchsorted(starts, hit, side="right") - 1
    keep = np.r_[True, grp[1:] != grp[:-1]] if len(grp) else np.zeros(0, dtype=np.bool_)
    return hit[keep]


@dataclass(frozen=True)
class Runs:
    """Runs of consecutive member rows per segment, continuing runs carried in from state."""

    length: I8  # run length so far at each member row (carried part included); 0 elsewhere
    carried: B1  # member row of a run that began before this chunk
    gid: I8  # run id of each member row (distinct per run); -1 elsewhere
    end_rows: I8  # rows at which a run had just ended (the run's last row is the one before)
    end_len: I8  # length of that run
    end_from_state: B1  # the run had no rows in this chunk (it ended at the segment start)


def track_runs(member: B1, brk: B1, seg: Seg, carry_len: I8) -> Runs:
    """``brk`` ends a run at a member row and starts a new one (e.g. the sign changed);
    ``carry_len`` is the length of the run in progress of each row's series (read at segment
    starts)."""
    n = len(member)
    idx = np.arange(n, dtype=np.int64)
    prev = np.empty(n, dtype=np.bool_)
    if n:
        prev[1:] = member[:-1]
        prev[seg.first] = carry_len[seg.first] > 0
    start = member & (~prev | brk)
    ended = prev & (~member | brk)
    sr = ffill_index(start, seg.s0)
    carried = member & (sr < 0)
    length = np.where(
        member, np.where(carried, carry_len + (idx - seg.s0) + 1, idx - sr + 1), 0
    ).astype(np.int64)
    opens = start | (carried & seg.first)
    gid = np.where(member, np.cumsum(opens) - 1, -1).astype(np.int64)
    e = np.flatnonzero(ended)
    from_state = e == seg.s0[e]
    end_len = np.where(from_state, carry_len[e], length[np.maximum(e - 1, 0)])
    return Runs(length, carried, gid, e, end_len.astype(np.int64), from_state)

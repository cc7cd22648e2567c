"""Per-reading detection on one chunk of readings, sorted by (series, time): pure NumPy.

For each series the chunk continues what the state holds, so the result does not depend on
how a series' readings are cut into batches (for readings that arrive in time order).

Readings are classified first:

- *duplicate*: same series and instant as an earlier row of the chunk (the first one counts);
- *late*: not newer than the newest reading already seen of its series; late readings are only
  range-checked (the baseline and the runs move forward in event time only);
- *new*: everything else. New readings drive silence (the time since the previous reading);
  new readings inside the physical range are *accepted* and feed the baseline and the runs.

Accepted readings go through :mod:`stream.detect.baseline` (a robust prediction per reading and
a scale per block) and :mod:`stream.detect.kinds` (spikes, level shifts, flat lines, noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.detect import baseline, kinds
from stream.detect.hits import RANGE, SILENCE, Gaps, Hits, to_score
from stream.detect.segments import B1, F8, I8, Seg, ffill_index, segments, shifted
from stream.detect.state import NONE_TS, SeriesState

_EMPTY_F = np.zeros(0, dtype=np.float64)


@dataclass
class ChunkOut:
    hits: list[Hits]
    gaps: Gaps
    late_sid: I8
    late_ts: I8
    late_x: F8
    late_score: F8
    row_score: F8 | None  # per input row (sorted order), for offline scoring
    events: tuple[I8, I8, I8, I8] | None  # (sid, kind, lo_ts, hi_ts) readings concerned
    jump: tuple[int, int] | None


def _range_score(x: F8, lo: F8, hi: F8) -> F8:
    finite = np.isfinite(lo) & np.isfinite(hi)
    bound = np.where(np.isfinite(hi), np.abs(hi), np.abs(lo))
    width = np.where(finite, hi - lo, np.maximum(np.where(np.isfinite(bound), bound, 1.0), 1.0))
    excess = np.maximum(lo - x, x - hi)
    return to_score(1.0 + excess / (0.05 * width))


def score_chunk(st: SeriesState, sid: I8, ts: I8, x: F8, *, offline: bool = False) -> ChunkOut:
    """Classify and score one chunk (finite values, sorted by (sid, ts), stable), and advance
    the state of its series. ``offline`` also returns per-row scores and the readings each
    detection concerns (for ``meetnet detect``)."""
    seg = segments(sid)
    n = len(sid)
    prev_ts = shifted(ts, seg, np.full(n, NONE_TS))
    dup = ~seg.first & (ts == prev_ts)
    late = ~dup & (ts <= st.last_ts[sid])
    new = ~dup & ~late
    lo, hi = st.min_v[sid], st.max_v[sid]
    oor = ~dup & ((x < lo) | (x > hi))
    oor &= st.on[sid, RANGE]
    acc = new & ~oor
    rscore = np.zeros(n)
    oi = np.flatnonzero(oor)
    rscore[oi] = _range_score(x[oi], lo[oi], hi[oi])

    # the usual chunk has no duplicate, late or out-of-range row: no copies then
    all_new = bool(new.all())
    ni = np.arange(n) if all_new else np.flatnonzero(new)
    sub = (lambda a: a) if all_new else (lambda a: a[ni])
    gaps, gap_rows, jump = _arrivals(st, sub(sid), sub(ts), sub(x), seg if all_new else None)
    range_hits = _range_hits(st, sub(sid), sub(ts), sub(x), sub(oor), sub(rscore))
    all_acc = all_new and len(oi) == 0
    ai = ni if all_acc else np.flatnonzero(acc)
    if all_acc:
        hits, a_score, a_events = _accepted(st, sid, ts, x, offline, seg)
    else:
        hits, a_score, a_events = _accepted(st, sid[ai], ts[ai], x[ai], offline, None)
    li = np.flatnonzero(late & oor)

    row_score = None
    ev = None
    if offline:
        row_score = rscore.copy()
        row_score[ai] = np.maximum(row_score[ai], a_score)
        gi = ni[gap_rows]
        if len(gi):
            gap = (ts[gi] - gaps.prev_ts[gaps.flag]).astype(np.float64)
            gsc = to_score(gap / np.maximum(st.allowed_us[sid[gi]], 1))
            row_score[gi] = np.maximum(row_score[gi], gsc)
        events = [(sid[oi], RANGE, ts[oi], ts[oi]), (sid[gi], SILENCE, ts[gi], ts[gi]), *a_events]
        ev = (
            np.concatenate([e[0] for e in events]),
            np.concatenate([np.full(len(e[0]), e[1], dtype=np.int64) for e in events]),
            np.concatenate([e[2] for e in events]),
            np.concatenate([e[3] for e in events]),
        )
    return ChunkOut(
        [range_hits, *hits], gaps, sid[li], ts[li], x[li], rscore[li], row_score, ev, jump
    )


def _arrivals(
    st: SeriesState, sid: I8, ts: I8, x: F8, seg: Seg | None
) -> tuple[Gaps, I8, tuple[int, int] | None]:
    """Gaps before new readings (silence on arrival), the stream clock's front, clock jumps.
    Returns the gaps, the rows (of the input) that end a flagged gap, and a jump if one was
    seen."""
    seg = seg or segments(sid)
    prev = shifted(ts, seg, st.last_ts[sid])
    prev_x = shifted(x, seg, st.last_x[sid])
    has_prev = prev != NONE_TS
    front = st.scalars["front"]
    jump = None
    if len(ts) and front != NONE_TS:
        jump_us = int(st.structural.clock_jump_s * 1e6)
        leap = seg.first & has_prev & (ts > front + jump_us)
        if np.count_nonzero(leap) >= st.structural.clock_jump_min_series:
            jump = (front, int(ts[leap].min()))
            st.scalars["jump_from"], st.scalars["jump_to"] = jump
    if len(ts):
        st.scalars["front"] = max(front, int(ts.max()))
    allowed = st.allowed_us[sid]
    flag = has_prev & st.on[sid, SILENCE] & (allowed > 0) & (ts - prev > allowed)
    jf, jt = st.scalars["jump_from"], st.scalars["jump_to"]
    if jf != NONE_TS:
        flag &= ~((prev <= jf) & (ts >= jt))  # the stream jumped, not this sensor
    resumes = seg.first & st.si_open[sid]
    pick = np.flatnonzero(flag | resumes)
    gaps = Gaps(sid[pick], prev[pick], ts[pick], prev_x[pick], resumes[pick], flag[pick])
    if len(ts):
        last = seg.ends
        st.last_ts[sid[last]] = ts[last]
        st.last_x[sid[last]] = x[last]
    return gaps, np.flatnonzero(flag), jump


def _range_hits(st: SeriesState, sid: I8, ts: I8, x: F8, oor: B1, score: F8) -> Hits:
    hi = np.flatnonzero(oor)
    bound = np.where(x[hi] > st.max_v[sid[hi]], st.max_v[sid[hi]], st.min_v[sid[hi]])
    return Hits(sid, ts, oor, ts[hi], ts[hi], ts[hi], score[hi], x[hi], x[hi], bound,
                np.ones(len(hi), dtype=np.int64))  # fmt: skip


def _accepted(
    st: SeriesState, sid: I8, ts: I8, x: F8, offline: bool, seg: Seg | None
) -> tuple[list[Hits], F8, list[tuple[I8, int, I8, I8]]]:
    seg = seg or segments(sid)
    n = len(sid)
    seq = st.n_acc[sid] + (np.arange(n, dtype=np.int64) - seg.s0)
    prev_ts = shifted(ts, seg, st.last_acc_ts[sid])
    prev_x = shifted(x, seg, st.last_acc_x[sid])
    events: list[tuple[I8, int, I8, I8]] | None = [] if offline else None
    flat, flat_r, flat_end = kinds.flats(st, seg, sid, ts, x, prev_x, events)
    # the baseline restarts after a gap longer than the silence allowance, and after a flat
    # line (whose constant readings say nothing about the series' usual noise)
    allowed = st.allowed_us[sid]
    restart = (ts - prev_ts > allowed) & (allowed > 0) & (prev_ts != NONE_TS) | flat_end
    if restart.any():
        lr = ffill_index(restart, seg.s0)
        reset_seq = np.where(lr >= 0, seq[np.maximum(lr, 0)], st.reset_seq[sid])
    else:
        reset_seq = st.reset_seq[sid]
    b = baseline.compute(st, seg, sid, x, seq, reset_seq)
    spike = kinds.spikes(st, seg, sid, ts, x, seq, b, events)
    shift = kinds.shifts(st, seg, sid, ts, x, seq, b, events)
    noise = kinds.noise(st, sid, ts, x, b, events)
    a_score = _EMPTY_F
    if offline:
        zr = np.abs(b.z) / st.spike_z[sid]
        nr = np.where(np.isfinite(b.ratio), b.ratio / st.noise_ratio[sid], 0.0)
        a_score = to_score(np.maximum(np.maximum(zr, flat_r), nr))
    ls = sid[seg.ends]
    st.n_acc[ls] = seq[seg.ends] + 1
    st.last_acc_ts[ls] = ts[seg.ends]
    st.last_acc_x[ls] = x[seg.ends]
    st.reset_seq[ls] = reset_seq[seg.ends]
    return [spike, shift, flat, noise], a_score, events or []

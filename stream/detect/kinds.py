"""The value-based anomaly kinds, on a chunk's accepted readings (sorted by series, time):

- **spike**: a run of at most ``spike.max_readings`` readings with |z| > ``spike.z``, that
  comes back (the run ends), and is *isolated*: none of the 7 readings before it deviated by
  more than ``level_shift.z`` (a burst of noise is not a series of spikes);
- **level_shift**: a run of |z| > ``level_shift.z`` of one sign that does not come back within
  ``spike.max_readings`` readings, confirmed ``level_shift.min_readings`` readings after it
  began if the local median still differs from the prediction made before the jump by more
  than ``level_shift.z`` scales, in the same direction;
- **flatline**: ``flatline.min_readings`` or more readings in a row within
  ``flatline.tolerance`` of the previous one, lasting at least ``flatline.min_duration_s``;
- **noise**: the block's error scale is ``noise.ratio`` times the usual one or more.

Each returns the :class:`Hits` that feed the episodes; runs in progress are carried in the
state, so the result does not depend on batching.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from stream.detect.baseline import Baseline, K
from stream.detect.hits import FLAT, NOISE, SHIFT, SPIKE, Events, Hits, no_hits, to_score
from stream.detect.segments import (
    B1,
    F8,
    I8,
    Seg,
    ffill_index,
    group_argmax,
    group_starts,
    segments,
    shifted,
    track_runs,
)
from stream.detect.state import NONE_TS, SeriesState

ISOLATION = K  # readings before a spike that must not deviate
CALM_Z = 4.0  # the readings confirming a spike stay within this many scales


def spikes(
    st: SeriesState, seg: Seg, sid: I8, ts: I8, x: F8, seq: I8, b: Baseline, events: Events
) -> Hits:
    low = b.valid & (np.abs(b.z) > st.shift_z[sid])
    busy = (st.sp_len[sid[seg.starts]] > 0) | (st.pd_len[sid[seg.starts]] > 0)
    r = _active(seg, low, busy)
    if r is None:
        return _spikes(st, seg, sid, ts, x, seq, b, events)
    if not len(r):
        return no_hits(sid, ts)
    h = _spikes(st, segments(sid[r]), sid[r], ts[r], x[r], seq[r], b.take(r), events)
    return _widen(h, r, sid, ts)


def _spikes(
    st: SeriesState, seg: Seg, sid: I8, ts: I8, x: F8, seq: I8, b: Baseline, events: Events
) -> Hits:
    n = len(sid)
    absz = np.abs(b.z)
    dev = b.valid & st.on[sid, SPIKE] & (absz > st.spike_z[sid])
    low = b.valid & (absz > st.shift_z[sid])
    carry = st.sp_len[sid]
    ll = ffill_index(low, seg.s0)
    waiting = st.pd_len[sid[seg.starts]] > 0
    if not dev.any() and not (carry[seg.first] > 0).any() and not waiting.any():
        _last_low(st, seg, sid, seq, ll)
        return no_hits(sid, ts)
    # isolation: the last deviation before each row, in this chunk or earlier
    before = shifted(ll, seg, np.full(n, -1, dtype=np.int64))
    last_low_seq = np.where(before >= 0, seq[np.maximum(before, 0)], st.last_low[sid])
    iso = seq - last_low_seq > ISOLATION
    _last_low(st, seg, sid, seq, ll)
    runs = track_runs(dev, np.zeros(n, dtype=np.bool_), seg, carry)
    pred = x - b.err
    # summaries of the runs with rows here: start, last, isolation, peak (z, x, pred, ts)
    mi = np.flatnonzero(dev)
    e0, f0 = np.zeros(0, np.int64), np.zeros(0)
    gids, r_start, r_last, r_pts, r_pz, r_px, r_pb = e0, e0, e0, e0, f0, f0, f0
    r_iso = np.zeros(0, dtype=np.bool_)
    if len(mi):
        g = runs.gid[mi]
        gs = group_starts(g)
        gids = g[gs]
        peak = mi[group_argmax(absz[mi], gs)]
        g_first, g_last = mi[gs], mi[np.r_[gs[1:], len(mi)] - 1]
        r_sid = sid[g_first]
        carried = runs.carried[g_first]
        r_start = np.where(carried, st.sp_start[r_sid], ts[g_first])
        r_last = ts[g_last]
        r_iso = np.where(carried, st.sp_iso[r_sid], iso[g_first])
        older = carried & (np.abs(st.sp_pz[r_sid]) >= absz[peak])
        r_pz = np.where(older, st.sp_pz[r_sid], b.z[peak])
        r_px = np.where(older, st.sp_px[r_sid], x[peak])
        r_pb = np.where(older, st.sp_pb[r_sid], pred[peak])
        r_pts = np.where(older, st.sp_pts[r_sid], ts[peak])
    # runs that ended here (e: the first row after the run)
    e, es = runs.end_rows, sid[runs.end_rows]
    c: dict[str, npt.NDArray[Any]] = {
        k: st.a[f"sp_{k}"][es] for k in ("start", "last", "pts", "pz", "px", "pb", "iso")
    }
    here = np.flatnonzero(~runs.end_from_state)
    j = np.searchsorted(gids, runs.gid[e[here] - 1]) if len(here) else e0
    for name, v in (("start", r_start), ("last", r_last), ("pts", r_pts), ("pz", r_pz),
                 ("px", r_px), ("pb", r_pb), ("iso", r_iso)):  # fmt: skip
        c[name][here] = v[j]
    # carry the runs still going at the end of each segment
    ls = sid[seg.ends]
    going = dev[seg.ends]
    st.sp_len[ls] = np.where(going, runs.length[seg.ends], 0)
    if going.any():
        j = np.searchsorted(gids, runs.gid[seg.ends[going]])
        gl = ls[going]
        for name, v in (("start", r_start), ("last", r_last), ("pts", r_pts), ("pz", r_pz),
                     ("px", r_px), ("pb", r_pb), ("iso", r_iso)):  # fmt: skip
            st.a[f"sp_{name}"][gl] = v[j]
    # a spike comes back: the reading after it no longer deviates (a step that dips below
    # spike.z for a moment is not a spike)
    back = b.valid[e] & (np.abs(b.z[e]) <= st.shift_z[es])
    k = np.flatnonzero((runs.end_len <= st.spike_max[es]) & c["iso"] & back)
    cand = {name: v[k] for name, v in c.items() if name != "iso"}
    cand["len"] = runs.end_len[k]
    calm_break = b.valid & (absz > CALM_Z)
    return _confirm(st, seg, sid, ts, calm_break, e[k], cand, events)


def _confirm(
    st: SeriesState,
    seg: Seg,
    sid: I8,
    ts: I8,
    low: B1,
    e: I8,
    cand: dict[str, npt.NDArray[Any]],
    events: Events,
) -> Hits:
    """A spike candidate (ended at row e) is confirmed when the ``spike.confirm_readings``
    readings after e do not deviate either: a burst of noise starts with what looks like a
    spike. Candidates waiting for later readings are carried in the state (at most one per
    series: any deviation, which a new candidate needs, cancels the waiting one)."""
    n = len(sid)
    idx = np.arange(n, dtype=np.int64)
    # first deviating row at or after each row, within its segment
    nxt = np.where(low, idx, n)[::-1]
    nxt = np.minimum.accumulate(nxt)[::-1]
    nxt = np.where(nxt <= seg.s1, nxt, n)
    names = ("start", "last", "pts", "pz", "px", "pb", "len")
    # waiting candidates of earlier chunks (they need confirm - calm more)
    w_seg = np.flatnonzero(st.pd_len[sid[seg.starts]] > 0)
    w_row0 = seg.starts[w_seg]
    w_sid = sid[w_row0]
    confirm = st.spike_confirm[sid]
    need = confirm[w_row0] - st.pd_calm[w_sid]
    first_calm_row = w_row0 - 1  # rows from w_row0 on must be calm
    rows_from = np.concatenate([first_calm_row, e])
    need_all = np.concatenate([need, confirm[e]])
    vals = {nm: np.concatenate([st.a["pd_" + nm][w_sid], cand[nm]]) for nm in names}
    at = rows_from + need_all  # the confirming row
    s1 = np.concatenate([seg.ends[w_seg], seg.s1[e]]) if len(rows_from) else rows_from
    nx = nxt[np.clip(rows_from + 1, 0, max(n - 1, 0))] if n else rows_from
    nx = np.where(rows_from + 1 <= s1, nx, n)
    confirmed = (at <= s1) & (nx > at)
    still = (at > s1) & (nx > s1)
    # state: clear what was waiting, then store what still waits
    st.pd_len[w_sid] = 0
    ws = np.flatnonzero(still)
    if len(ws):
        gs = sid[np.minimum(s1[ws], n - 1)]
        for nm in names:
            st.a["pd_" + nm][gs] = vals[nm][ws]
        st.pd_calm[gs] = (
            confirm[np.minimum(s1[ws], n - 1)] - need_all[ws] + (s1[ws] - rows_from[ws])
        )
    ok = np.flatnonzero(confirmed)
    ok = ok[np.argsort(at[ok], kind="stable")]
    r = at[ok]
    hit = np.zeros(n, dtype=np.bool_)
    hit[r] = True
    v = {nm: vals[nm][ok] for nm in names}
    if events is not None and len(ok):
        events.append((sid[r], SPIKE, v["start"], v["last"]))
    score = to_score(np.abs(v["pz"]) / st.spike_z[sid[r]])
    return Hits(sid, ts, hit, v["start"], v["last"], v["pts"], score, v["pz"], v["px"], v["pb"],
                v["len"].astype(np.int64))  # fmt: skip


def _last_low(st: SeriesState, seg: Seg, sid: I8, seq: I8, ll: I8) -> None:
    last = ll[seg.ends]
    has = last >= 0
    st.last_low[sid[seg.ends[has]]] = seq[last[has]]


def shifts(
    st: SeriesState, seg: Seg, sid: I8, ts: I8, x: F8, seq: I8, b: Baseline, events: Events
) -> Hits:
    low = b.valid & (np.abs(b.z) > st.shift_z[sid])
    busy = (st.sh_len[sid[seg.starts]] > 0) | (st.cd_seq[sid[seg.starts]] >= 0)
    r = _active(seg, low, busy)
    if r is None:
        return _shifts(st, seg, sid, ts, x, seq, b, events)
    if not len(r):
        return no_hits(sid, ts)
    h = _shifts(st, segments(sid[r]), sid[r], ts[r], x[r], seq[r], b.take(r), events)
    return _widen(h, r, sid, ts)


def _shifts(
    st: SeriesState, seg: Seg, sid: I8, ts: I8, x: F8, seq: I8, b: Baseline, events: Events
) -> Hits:
    n = len(sid)
    thr = st.shift_z[sid]
    sign = np.sign(b.z).astype(np.int8)
    low = b.valid & (np.abs(b.z) > thr)
    carry = st.sh_len[sid]
    pending = st.cd_seq[sid[seg.starts]] >= 0
    if not low.any() and not (carry[seg.first] > 0).any() and not pending.any():
        return no_hits(sid, ts)
    prev_sign = shifted(sign, seg, st.sh_sign[sid])
    runs = track_runs(low, low & (sign != prev_sign), seg, carry)
    start_row = np.maximum(ffill_index(low & ~runs.carried & (runs.length == 1), seg.s0), 0)
    pred = x - b.err
    c_ = runs.carried
    r_seq = np.where(c_, st.sh_seq[sid], seq[start_row])
    r_ts = np.where(c_, st.sh_ts[sid], ts[start_row])
    r_ref = np.where(c_, st.sh_ref[sid], pred[start_row])
    ls = sid[seg.ends]
    going = low[seg.ends]
    st.sh_len[ls] = np.where(going, runs.length[seg.ends], 0)
    st.sh_sign[ls] = np.where(going, sign[seg.ends], 0)
    st.sh_seq[ls], st.sh_ts[ls] = r_seq[seg.ends], r_ts[seg.ends]
    st.sh_ref[ls] = r_ref[seg.ends]
    # candidates: runs that did not come back within spike.max_readings readings
    cr = np.flatnonzero(low & st.on[sid, SHIFT] & (runs.length == st.spike_max[sid] + 1))
    m = st.shift_min[sid]
    c_seq = np.concatenate([st.cd_seq[sid[seg.starts[pending]]], r_seq[cr]])
    c_ts = np.concatenate([st.cd_ts[sid[seg.starts[pending]]], r_ts[cr]])
    c_ref = np.concatenate([st.cd_ref[sid[seg.starts[pending]]], r_ref[cr]])
    c_sign = np.concatenate([st.cd_sign[sid[seg.starts[pending]]], sign[cr]])
    c_row0 = np.concatenate([seg.starts[pending], cr])  # a row of the candidate's series
    check = c_row0 + (c_seq + m[c_row0] - 1 - seq[c_row0])
    inside = check <= seg.s1[c_row0]
    # what is still pending at the end: the latest candidate of a series not checked yet
    st.cd_seq[sid[seg.starts[pending]]] = -1
    wait = np.flatnonzero(~inside)
    if len(wait):
        ws = sid[c_row0[wait]]
        st.cd_seq[ws], st.cd_ts[ws] = c_seq[wait], c_ts[wait]
        st.cd_ref[ws], st.cd_sign[ws] = c_ref[wait], c_sign[wait]
    ok = np.flatnonzero(inside)
    r = check[ok]
    d = b.sm[r] - c_ref[ok]
    with np.errstate(invalid="ignore"):
        good = b.valid[r] & (np.sign(d) == c_sign[ok]) & (np.abs(d) > thr[r] * b.scale[r])
    ok, r, d = ok[good], r[good], d[good]
    order = np.argsort(r, kind="stable")
    ok, r, d = ok[order], r[order], d[order]
    hit = np.zeros(n, dtype=np.bool_)
    hit[r] = True
    stat = d / b.scale[r]
    if events is not None and len(r):
        events.append((sid[r], SHIFT, c_ts[ok], ts[r]))
    return Hits(sid, ts, hit, c_ts[ok], ts[r], ts[r], to_score(np.abs(stat) / thr[r]), stat,
                b.sm[r], c_ref[ok], m[r])  # fmt: skip


def flats(
    st: SeriesState, seg: Seg, sid: I8, ts: I8, x: F8, prev_x: F8, events: Events
) -> tuple[Hits, F8, B1]:
    """Flat lines; also returns each row's flat ratio and the rows that end a flat line."""
    eq = np.abs(x - prev_x) <= st.flat_tol[sid]  # NaN prev (no history) -> False
    r = _active(seg, eq, st.fl_len[sid[seg.starts]] > 0)
    if r is None:
        return _flats(st, seg, sid, ts, x, eq, events)
    n = len(sid)
    ratio, ends = np.zeros(n), np.zeros(n, dtype=np.bool_)
    if not len(r):
        return no_hits(sid, ts), ratio, ends
    h, ratio[r], ends[r] = _flats(st, segments(sid[r]), sid[r], ts[r], x[r], eq[r], events)
    return _widen(h, r, sid, ts), ratio, ends


def _active(seg: Seg, rows: B1, carried: B1) -> I8 | None:
    """Rows of the series with a row in ``rows`` or carried state; None when that is all."""
    if not len(rows):
        return None
    act = np.maximum.reduceat(rows, seg.starts) | carried
    if act.all():
        return None
    return np.flatnonzero(np.repeat(act, seg.ends - seg.starts + 1))


def _widen(h: Hits, r: I8, sid: I8, ts: I8) -> Hits:
    """Hits found on the rows ``r`` of a domain, as hits of the whole domain."""
    hit = np.zeros(len(sid), dtype=np.bool_)
    hit[r[h.hit]] = True
    return Hits(sid, ts, hit, h.h_start, h.h_last, h.pts, h.score, h.stat, h.x, h.base, h.n_inc)


def _flats(
    st: SeriesState, seg: Seg, sid: I8, ts: I8, x: F8, eq: B1, events: Events
) -> tuple[Hits, F8, B1]:
    carry = st.fl_len[sid]
    n = len(sid)
    runs = track_runs(eq, np.zeros(n, dtype=np.bool_), seg, carry)
    readings = runs.length + 1  # the reading before the first repeat is part of the line
    prev_ts = shifted(ts, seg, st.last_acc_ts[sid])
    start_row = np.maximum(ffill_index(eq & ~runs.carried & (runs.length == 1), seg.s0), 0)
    r_start = np.where(runs.carried, st.fl_start[sid], prev_ts[start_row])
    on = st.on[sid, FLAT]
    long_enough = (readings >= st.flat_min[sid]) & (ts - r_start >= st.flat_min_us[sid])
    qual = eq & on & long_enough
    was_qual = (  # the run carried in had already qualified (as of its last reading)
        on
        & (carry > 0)
        & (carry + 1 >= st.flat_min[sid])
        & (st.last_acc_ts[sid] - st.fl_start[sid] >= st.flat_min_us[sid])
    )
    prev_q = shifted(qual, seg, was_qual)
    ends = ~eq & prev_q  # the first reading after a flat line
    ls = sid[seg.ends]
    st.fl_len[ls] = np.where(eq[seg.ends], runs.length[seg.ends], 0)
    st.fl_start[ls] = np.where(eq[seg.ends], r_start[seg.ends], NONE_TS)
    ratio = np.where(eq & on, readings / st.flat_min[sid], 0.0)
    qi = np.flatnonzero(qual)
    if len(qi) == 0:
        return no_hits(sid, ts), ratio, ends
    n_inc = np.where(~prev_q[qi], readings[qi], 1)
    if events is not None:
        events.append((sid[qi], FLAT, r_start[qi], ts[qi]))
    hits = Hits(sid, ts, qual, r_start[qi], ts[qi], ts[qi], to_score(ratio[qi]),
                readings[qi].astype(np.float64), x[qi], x[qi], n_inc.astype(np.int64))  # fmt: skip
    return hits, ratio, ends


def noise(st: SeriesState, sid: I8, ts: I8, x: F8, b: Baseline, events: Events) -> Hits:
    with np.errstate(invalid="ignore"):
        hit = st.on[sid, NOISE] & (b.ratio >= st.noise_ratio[sid])
    qi = np.flatnonzero(hit)
    if events is not None and len(qi):
        events.append((sid[qi], NOISE, ts[qi], ts[qi]))
    r = b.ratio[qi]
    usual = b.scale[qi] / np.maximum(r, 1e-300)
    return Hits(sid, ts, hit, ts[qi], ts[qi], ts[qi], to_score(r / st.noise_ratio[sid[qi]]), r,
                x[qi], usual, np.ones(len(qi), dtype=np.int64))  # fmt: skip

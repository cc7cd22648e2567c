"""The robust baseline of each series: a local prediction per reading and a scale per block.

**Prediction.** ``sm[t]`` is the median of the 7 accepted readings ending at ``t``. Reading
``t`` is predicted from the three medians before it, ``m1 = sm[t-1]``, ``m2 = sm[t-8]``,
``m3 = sm[t-15]``::

    pred[t] = m1 + 4 * minmod((m1 - m2) / 7, (m2 - m3) / 7)

``minmod`` keeps the smaller slope when both agree in sign and is 0 otherwise: a daily or
tidal ramp is followed (the medians lag it by 4 readings, the slope makes that up), while a
step, a spike or a turning point adds no slope and so no overshoot. A median of 7 ignores up to
3 odd readings, so a spike does not move the prediction of the readings around it.

**Scale.** When a block of ``block`` (8) accepted readings completes, the *raw* scale of the
next block is the interquartile range of the last 32 prediction errors / 1.349 (a standard
deviation for normal errors, as robust as a MAD and one sort cheaper), and the *usual* scale the
median of the previous ``noise_blocks`` (16) raw scales. Readings are judged against the
largest of raw, usual and ``min_scale``: a quiet stretch does not turn ordinary readings into
outliers. raw / usual is the noise ratio. The scale is calibrated on exactly the statistic that
is tested, so correlated noise, quantisation and cycles are accounted for.

Everything follows sequence positions (the count of accepted readings), so it does not depend
on batching. After a restart (a gap longer than the silence allowance, or the end of a flat
line) a series needs ``WARMUP`` + 32 readings before it is scored again.

**Cost.** Rings are indexed by position modulo their size, and each ring is exactly as long as
what is read from it, so a row that is the first of its series in the chunk (the usual case)
reads whole ring rows, in any order (medians do not care); only rows with a few earlier rows of
their series in the chunk need per-offset look-backs. Per reading: one ring row of 6 values, a
sorting network for the median of 7, two look-ups of earlier medians and three ring writes;
per block: 32 errors, two sorts and 16 scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stream.detect.segments import B1, F8, I8, Seg, segments, shifted
from stream.detect.state import SeriesState

K = 7  # length of the local median
WARMUP = 3 * K  # readings after a (re)start before the first prediction
ERRORS = 32  # errors of the raw scale (the size of the error ring)
# comparators of a sorting network for 7 values, pruned to those that decide the median
_MEDIAN7 = ((0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5), (3, 4), (1, 2),
            (4, 6), (2, 3), (4, 5), (3, 4))  # fmt: skip


@dataclass
class Baseline:
    sm: F8  # local median of each row (NaN while unknown)
    err: F8  # x - prediction (NaN while unknown)
    scale: F8  # the row's block scale
    ratio: F8  # the row's block noise ratio (NaN while unknown)
    valid: B1  # the row can be scored
    z: F8  # err / scale where valid, else 0

    def take(self, rows: I8) -> Baseline:
        return Baseline(self.sm[rows], self.err[rows], self.scale[rows], self.ratio[rows],
                        self.valid[rows], self.z[rows])  # fmt: skip


def median7(prev6: F8, x: F8) -> F8:
    """Median of each row of (prev6 | x) by a sorting network on column arrays, in place."""
    c = [np.ascontiguousarray(prev6[:, j]) for j in range(6)] + [x.copy()]
    tmp = np.empty(len(x))
    for i, j in _MEDIAN7:
        np.minimum(c[i], c[j], out=tmp)
        np.maximum(c[i], c[j], out=c[j])
        c[i], tmp = tmp, c[i]
    return c[3]


def _extended(cur: F8, ring: F8, seg: Seg, sid: I8, seq: I8) -> tuple[F8, I8]:
    """Per segment, the series' ring in time order followed by the segment's values, all
    concatenated; returns that array and the position of each row in it. A row's ``size``
    previous values are then one slice."""
    size = ring.shape[1]
    g = np.cumsum(seg.first) - 1  # segment of each row
    at = np.arange(len(cur)) + (g + 1) * size
    ext = np.empty(len(cur) + len(seg.starts) * size)
    ext[at] = cur
    s0 = seg.starts
    n0 = seq[s0]  # position of each segment's first row
    old = ring.reshape(-1)[_slot(ring, sid[s0][:, None], n0[:, None] + np.arange(size))]
    ext[(s0 + np.arange(len(s0)) * size)[:, None] + np.arange(size)] = old
    return ext, at


def window(cur: F8, ring: F8, sid: I8, seq: I8, rank: I8, seg: Seg) -> F8:
    """The ``size`` values before each row (size = the ring's), oldest first, except when all
    rows are the first of their series in the chunk: then the ring rows as they are."""
    if (rank == 0).all():
        return ring[sid]  # the usual case, one row gather (a median ignores the order)
    ext, at = _extended(cur, ring, seg, sid, seq)
    return sliding_window_view(ext, ring.shape[1])[at - ring.shape[1]]


def _last_errors(err: F8, ring: F8, seg: Seg, sid: I8, seq: I8, rank: I8, ci: I8) -> F8:
    """The ring-size errors ending at (and including) each completing row ``ci``."""
    size = ring.shape[1]
    if (rank[ci] == 0).all():  # the ring row, its oldest slot replaced by this error
        out = ring[sid[ci]]
        out[np.arange(len(ci)), seq[ci] & (size - 1)] = err[ci]
        return out
    ext, at = _extended(err, ring, seg, sid, seq)
    return sliding_window_view(ext, size)[at[ci] - (size - 1)]


def _slot(ring: F8, sid: I8, pos: I8) -> I8:
    """Flat indices of positions ``pos`` of series ``sid`` in a ring (position % size)."""
    size = ring.shape[1]
    wrapped = pos & (size - 1) if size & (size - 1) == 0 else pos % size
    return sid * size + wrapped


def back(cur: F8, ring: F8, sid: I8, seq: I8, rank: I8, rows: I8, o: int) -> F8:
    """The value ``o`` readings before each row: in this chunk if its rank is at least ``o``,
    else from the ring (indexed by position % size)."""
    old = ring.reshape(-1)[_slot(ring, sid, seq - o)]
    inside = rank >= o
    return np.where(inside, cur[np.maximum(rows - o, 0)], old) if inside.any() else old


def _write(ring: F8, seg: Seg, sid: I8, seq: I8, rank: I8, vals: F8) -> None:
    """Write each series' latest values (at most the ring's size) at position % size."""
    size = ring.shape[1]
    last = rank >= (seg.s1 - seg.s0 + 1) - size
    flat = ring.reshape(-1)  # a view: the state arrays are contiguous
    if last.all():
        flat[_slot(ring, sid, seq)] = vals
    else:
        flat[_slot(ring, sid[last], seq[last])] = vals[last]


def compute(st: SeriesState, seg: Seg, sid: I8, x: F8, seq: I8, reset_seq: I8) -> Baseline:
    """Predictions, errors and block scales of this chunk's accepted rows; advances the
    rings and the block state."""
    n = len(sid)
    rows = np.arange(n, dtype=np.int64)
    rank = rows - seg.s0
    prev6 = window(x, st.vring, sid, seq, rank, seg)
    sm = median7(prev6, x)
    sm = np.where(seq - (K - 1) >= reset_seq, sm, np.nan)
    m1 = shifted(sm, seg, st.last_sm[sid])
    m2 = back(sm, st.smring, sid, seq, rank, rows, 1 + K)
    m3 = back(sm, st.smring, sid, seq, rank, rows, 1 + 2 * K)
    a, b = (m1 - m2) / K, (m2 - m3) / K
    slope = np.where(a * b > 0, np.sign(a) * np.minimum(np.abs(a), np.abs(b)), 0.0)
    err = np.where(seq - WARMUP >= reset_seq, x - (m1 + (K + 1) / 2 * slope), np.nan)
    scale, ratio, valid = _blocks(st, seg, sid, seq, rank, rows, err)
    valid &= np.isfinite(err)
    z = np.where(valid, err / np.where(valid, scale, 1.0), 0.0)
    _write(st.vring, seg, sid, seq, rank, x)
    _write(st.smring, seg, sid, seq, rank, sm)
    _write(st.ering, seg, sid, seq, rank, err)
    st.last_sm[sid[seg.ends]] = sm[seg.ends]
    return Baseline(sm, err, scale, ratio, valid, z)


def _blocks(
    st: SeriesState, seg: Seg, sid: I8, seq: I8, rank: I8, rows: I8, err: F8
) -> tuple[F8, F8, B1]:
    """Scales of the blocks whose previous block completes in this chunk (computed at the
    completing row), then each row's block scale (from such a row, or carried in)."""
    b = st.structural.block
    old = (st.bk_scale[sid], st.bk_ratio[sid], st.bk_valid[sid])
    ci = np.flatnonzero((seq & (b - 1)) == b - 1)
    if not len(ci):
        return old
    c_sid, c_seq = sid[ci], seq[ci]
    errs = _last_errors(err, st.ering, seg, sid, seq, rank, ci)
    errs.sort(axis=1)  # NaN (an unknown error) sorts last
    q = ERRORS // 4  # quartiles of the sorted errors (interpolated between neighbours)
    iqr = 0.5 * (errs[:, 3 * q - 1] + errs[:, 3 * q]) - 0.5 * (errs[:, q - 1] + errs[:, q])
    raw = np.where(np.isnan(errs[:, -1]), np.nan, iqr / 1.349)
    raw = np.maximum(raw, st.min_scale[c_sid])
    # the usual scale: median of the previous raw scales (ring + those completed here)
    kc = c_seq // b
    prev = _previous_blocks(st.sring, raw, c_sid, kc, ci, seg)
    prev.sort(axis=1)
    r = prev.shape[1]
    usual = np.where(np.isnan(prev[:, -1]), np.nan, 0.5 * (prev[:, r // 2 - 1] + prev[:, r // 2]))
    eff = np.where(np.isfinite(usual), np.maximum(raw, usual), raw)
    valid = np.isfinite(eff) & (eff > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(valid & (usual > 0), raw / usual, np.nan)
    cseg = segments(c_sid)
    keep = kc > kc[cseg.s1] - r
    st.sring[c_sid[keep], kc[keep] % r] = raw[keep]
    ls = c_sid[cseg.ends]
    st.bk_idx[ls] = kc[cseg.ends] + 1
    st.bk_scale[ls], st.bk_ratio[ls], st.bk_valid[ls] = (
        eff[cseg.ends],
        ratio[cseg.ends],
        valid[cseg.ends],
    )
    # each row's block was scaled at the row that completed the previous block
    pos = np.full(len(sid), -1, dtype=np.int64)
    pos[ci] = np.arange(len(ci))
    done = rows - (seq & (b - 1)) - 1  # that row, if in this chunk
    inside = done >= seg.s0
    if not inside.any():
        return old
    j = np.maximum(pos[np.where(inside, done, 0)], 0)
    return (
        np.where(inside, eff[j], old[0]),
        np.where(inside, ratio[j], old[1]),
        np.where(inside, valid[j], old[2]),
    )


def _previous_blocks(ring: F8, cur: F8, sid: I8, k: I8, rows: I8, seg: Seg) -> F8:
    """The ring-size block values before block k of each completing row (any order): the ring
    row, with the blocks completed earlier in this chunk in their slots."""
    size = ring.shape[1]
    out = ring[sid].copy()
    # ring slots that hold blocks before k - size (never written yet) are NaN already; blocks
    # k - size .. k - 1 completed in this chunk replace their slots
    s0 = seg.s0[rows] if len(rows) else rows
    c = np.searchsorted(rows, s0)  # first completing row of the same segment
    rank_c = np.arange(len(rows)) - c  # earlier completed blocks of this series, here
    for o in range(1, size + 1):
        here = np.flatnonzero(rank_c >= o)
        if not len(here):
            break
        out[here, (k[here] - o) % size] = cur[here - o]
    return out

"""Flag lifecycle: per (series, kind) at most one open episode, extended by further hits and
resolved after ``resolve_after`` clean readings in a row. Vectorized over all series.

A broken sensor therefore gives one episode that grows (its last reading, count and peak are
updated), not a flag per reading. An episode is keyed by (series, kind, started_at), which is
the same however the readings were batched, so replays upsert the same row.

The clean-reading count is what makes this batch-independent: an episode resolves at its
``resolve_after``-th clean reading after its last hit, wherever the batch boundaries fall.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from stream.detect.hits import Hits
from stream.detect.segments import (
    B1,
    F8,
    I8,
    Seg,
    ffill_index,
    group_argmax,
    segments,
    shifted,
)
from stream.detect.state import NONE_TS, SeriesState

_INF = np.int64(1) << 62


@dataclass
class Episodes:
    """Episodes of one kind touched by a chunk (opened, extended or resolved in it)."""

    kind: I8  # per episode (so that kinds can be concatenated)
    sid: I8
    start: I8  # started_at: when the condition began
    last: I8  # the last reading concerned
    n: I8  # readings concerned
    score: F8  # peak score, and the statistic, value, baseline and time of the peak
    stat: F8
    x: F8
    base: F8
    pts: I8
    first_x: F8
    opened: B1  # opened in this chunk, at opened_at (event time)
    opened_at: I8
    resolved: B1  # resolved in this chunk, at resolved_at; the condition ended at `ended`
    ended: I8
    resolved_at: I8

    @property
    def size(self) -> int:
        return len(self.sid)

    @classmethod
    def concat(cls, parts: list[Episodes]) -> Episodes:
        if not parts:
            return empty(0)
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def select(self, mask: B1 | I8) -> Episodes:
        return Episodes(*(getattr(self, f.name)[mask] for f in fields(self)))


def empty(kind: int) -> Episodes:
    i, f, b = np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.bool_)
    return Episodes(i, i, i, i, i, f, f, f, f, i, f, b, i, b, i, i)


def track(st: SeriesState, kind: int, h: Hits) -> Episodes:
    """Advance the episodes of ``kind`` over the domain rows of ``h``; update the state."""
    if len(h.sid) == 0:
        return empty(kind)
    if not h.hit.any() and not st.ep_open[h.sid, kind].any():
        return empty(kind)
    seg = segments(h.sid)
    seg_hit = np.maximum.reduceat(h.hit, seg.starts)
    keep_seg = seg_hit | st.ep_open[h.sid[seg.starts], kind]
    if not keep_seg.any():
        return empty(kind)
    if not keep_seg.all():  # only series with hits or an open episode matter
        rows = np.repeat(keep_seg, seg.ends - seg.starts + 1)
        hk = rows[np.flatnonzero(h.hit)]
        h = Hits(h.sid[rows], h.ts[rows], h.hit[rows], h.h_start[hk], h.h_last[hk], h.pts[hk],
                 h.score[hk], h.stat[hk], h.x[hk], h.base[hk], h.n_inc[hk])  # fmt: skip
        seg = segments(h.sid)
    sid, ts, hit = h.sid, h.ts, h.hit
    idx = np.arange(len(sid), dtype=np.int64)
    open0 = st.ep_open[sid, kind]
    clean0 = st.ep_clean[sid, kind]
    lh = ffill_index(hit, seg.s0)
    cnt = np.where(lh >= 0, idx - lh, np.where(open0, clean0 + idx - seg.s0 + 1, _INF))
    prev_cnt = shifted(cnt, seg, np.where(open0, clean0, _INF))
    hr = np.flatnonzero(hit)
    new_ep = prev_cnt[hr] >= st.resolve[sid[hr], kind]
    # Does each segment's first hit continue the episode carried in?
    hseg = np.searchsorted(seg.starts, hr, side="right") - 1
    first_of_seg = np.r_[True, hseg[1:] != hseg[:-1]] if len(hr) else np.zeros(0, np.bool_)
    cont = np.zeros(len(seg.starts), dtype=np.bool_)
    cont[hseg[first_of_seg]] = ~new_ep[first_of_seg]
    lone = np.flatnonzero(st.ep_open[sid[seg.starts], kind] & ~cont)
    parts = []
    if len(lone):
        parts.append(_carried(st, kind, ts, seg, sid[seg.starts[lone]], lone))
    if len(hr):
        parts.append(_grouped(st, kind, h, seg, hr, new_ep | first_of_seg, ~new_ep))
    return Episodes.concat(parts)


def _carried(st: SeriesState, kind: int, ts: I8, seg: Seg, sids: I8, segs: I8) -> Episodes:
    """Open episodes carried in that no hit of this chunk continues: they resolve here (their
    clean readings reach resolve_after) or stay open counting clean readings."""
    s0, s1 = seg.starts[segs], seg.ends[segs]
    clean0 = st.ep_clean[sids, kind]
    rr = s0 + (st.resolve[sids, kind] - clean0 - 1)  # row of the resolving reading
    resolved = rr <= s1
    clear = st.ep_clear[sids, kind]
    clear = np.where(clear == NONE_TS, ts[s0], clear)
    r = np.flatnonzero(resolved)
    rs = sids[r]
    out = Episodes(
        np.full(len(r), kind),
        rs,
        st.ep_start[rs, kind],
        st.ep_last[rs, kind],
        st.ep_n[rs, kind],
        st.ep_score[rs, kind],
        st.ep_stat[rs, kind],
        st.ep_x[rs, kind],
        st.ep_base[rs, kind],
        st.ep_pts[rs, kind],
        st.ep_first_x[rs, kind],
        np.zeros(len(r), dtype=np.bool_),
        np.full(len(r), NONE_TS),
        np.ones(len(r), dtype=np.bool_),
        clear[r],
        ts[rr[r]],
    )
    st.ep_open[rs, kind] = False
    still = np.flatnonzero(~resolved)
    ss = sids[still]
    st.ep_clean[ss, kind] = clean0[still] + (s1 - s0 + 1)[still]
    st.ep_clear[ss, kind] = clear[still]
    return out


def _grouped(
    st: SeriesState, kind: int, h: Hits, seg: Seg, hr: I8, gstart: B1, cont: B1
) -> Episodes:
    """Episodes with hits in this chunk: a group of hits per episode."""
    ts = h.ts
    gs = np.flatnonzero(gstart)
    ge = np.r_[gs[1:], len(hr)]  # exclusive ends, in hit positions
    carried = cont[gs]  # the group continues the episode carried in
    g = h.sid[hr[gs]]
    lhr = hr[ge - 1]  # row of each group's last hit
    k = kind
    start = np.where(carried, st.ep_start[g, k], h.h_start[gs])
    last = np.maximum.reduceat(h.h_last, gs)
    last = np.where(carried, np.maximum(last, st.ep_last[g, k]), last)
    n = np.add.reduceat(h.n_inc, gs) + np.where(carried, st.ep_n[g, k], 0)
    pk = group_argmax(h.score, gs)
    older = carried & (st.ep_score[g, k] >= h.score[pk])
    score = np.where(older, st.ep_score[g, k], h.score[pk])
    stat = np.where(older, st.ep_stat[g, k], h.stat[pk])
    x = np.where(older, st.ep_x[g, k], h.x[pk])
    base = np.where(older, st.ep_base[g, k], h.base[pk])
    pts = np.where(older, st.ep_pts[g, k], h.pts[pk])
    first_x = np.where(carried, st.ep_first_x[g, k], h.x[gs])
    opened = ~carried
    opened_at = np.where(opened, ts[hr[gs]], NONE_TS)
    # resolution: the resolve_after-th clean row after the last hit, if within this chunk
    s1 = seg.s1[lhr]
    rr = lhr + st.resolve[g, k]
    resolved = rr <= s1
    nrow = len(ts) - 1
    # the condition ended at the first reading after the last one concerned (a spike's hit row
    # is the reading that came back, so it is that row itself)
    clear = np.where(
        h.h_last[ge - 1] < ts[lhr],
        ts[lhr],
        np.where(lhr < s1, ts[np.minimum(lhr + 1, nrow)], NONE_TS),
    )
    out = Episodes(
        np.full(len(gs), kind),
        g,
        start,
        last,
        n,
        score,
        stat,
        x,
        base,
        pts,
        first_x,
        opened,
        opened_at,
        resolved,
        np.where(resolved, clear, NONE_TS),
        np.where(resolved, ts[np.minimum(rr, nrow)], NONE_TS),
    )
    # state: the last episode of each series
    lg = np.flatnonzero(np.r_[g[1:] != g[:-1], True])
    ls = g[lg]
    st.ep_open[ls, k] = ~resolved[lg]
    st.ep_start[ls, k], st.ep_last[ls, k], st.ep_n[ls, k] = start[lg], last[lg], n[lg]
    st.ep_score[ls, k], st.ep_stat[ls, k] = score[lg], stat[lg]
    st.ep_x[ls, k], st.ep_base[ls, k], st.ep_pts[ls, k] = x[lg], base[lg], pts[lg]
    st.ep_first_x[ls, k] = first_x[lg]
    st.ep_clean[ls, k] = (s1 - lhr)[lg]
    st.ep_clear[ls, k] = clear[lg]
    return out

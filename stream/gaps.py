"""Never move past records a fetch skipped: offset gaps in a poll batch are re-read first.

On the readings topic (not compacted, written without transactions) a partition's offsets are
contiguous, so a poll batch that jumps over offsets did not get records that exist or are about
to. Apache Kafka never answers a fetch like that. The local Kafka-protocol broker (Tansu 0.6)
can: it hands out a produce's offsets before the batch is readable, so a fetch racing two
gateways' produces to one partition may return the later batch without the earlier one. The
consumer's position then passes the missing records, the processor commits past them, and they
are never stored although Kafka has them (seen in tests/test_scaleout.py).

:class:`OffsetGaps` checks each poll batch against the next offset expected per partition
(the group's committed offset when a partition is first seen after an assignment): records up
to the gap are processed, the partition is sought back to the gap and read again on the next
poll. A gap that is still there after ``wait_s`` is genuine (records removed by compaction or
retention, transaction markers): it is accepted with a warning, so a topic with real gaps is
delayed, never stuck. The check costs O(1) per partition and batch: only a batch whose first
and last offsets do not span its length is searched.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import overload

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


def first_gap(offsets: Sequence[int], expected: int) -> int | None:
    """Index of the first offset after a gap (``expected`` then each offset + 1), or None.
    Offsets at or below what is expected (a replay) are no gap."""
    if not offsets:
        return None
    if offsets[0] > expected:
        return 0
    if offsets[-1] - offsets[0] + 1 == len(offsets):
        return None  # contiguous: the common case, decided without looking at every record
    for i in range(1, len(offsets)):
        if offsets[i] > offsets[i - 1] + 1:
            return i
    return None


class GapTimer:
    """How long each partition's gap has been open: its first offset and when it was first
    seen (a gap at another offset starts over)."""

    def __init__(self, wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = wait_s
        self.clock = clock
        self._open: dict[TopicPartition, tuple[int, float]] = {}

    def seen(self, tp: TopicPartition, start: int) -> float:
        """A gap at ``start`` is there: seconds since it was first seen (0.0 the first time).
        At ``wait_s`` or more the gap is closed here and the caller accepts it."""
        now = self.clock()
        first = self._open.get(tp)
        if first is None or first[0] != start:
            self._open[tp] = first = (start, now)
        waited = now - first[1]
        if waited >= self.wait_s:
            del self._open[tp]
        return waited

    def filled(self, tp: TopicPartition, upto: int) -> float | None:
        """Records up to ``upto`` (exclusive) arrived: seconds the gap there was open, if any."""
        first = self._open.get(tp)
        if first is None or first[0] >= upto:
            return None
        del self._open[tp]
        return self.clock() - first[1]

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._open.pop(tp, None)


class _Offsets(Sequence[int]):
    """The offsets of ``recs[start:]``, read only where looked at."""

    def __init__(self, recs: list[ConsumerRecord[bytes, bytes]], start: int) -> None:
        self.recs, self.start = recs, start

    def __len__(self) -> int:
        return len(self.recs) - self.start

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...
    def __getitem__(self, i: int | slice) -> int | Sequence[int]:
        if isinstance(i, slice):
            return [r.offset for r in self.recs[self.start :][i]]
        return self.recs[self.start + i if i >= 0 else i].offset


class OffsetGaps:
    """Trims poll batches at offset gaps and seeks back to them (see the module docstring).
    Also counts the records it passes on per partition, for the processor's stats."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.timer = GapTimer(wait_s, clock)
        self._next: dict[TopicPartition, int] = {}
        self.received: Counter[int] = Counter()  # records passed on, per partition
        self.reread = 0  # gaps re-read (records a fetch had skipped)
        self.accepted = 0  # gaps accepted as genuine after wait_s

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """On a rebalance: where a partition resumes is the group's business again."""
        tps = list(tps)
        for tp in tps:
            self._next.pop(tp, None)
        self.timer.forget(tps)

    async def check(self, batch: Records) -> Records:
        """``batch`` without the records at and after a gap that is still being waited for."""
        if self.timer.wait_s <= 0:  # gaps are expected on this topic: take batches as they come
            for tp, recs in batch.items():
                self.received[tp.partition] += len(recs)
            return batch
        out: Records = {}
        for tp, recs in batch.items():
            if not recs:
                continue
            expected = self._next.get(tp)
            if expected is None:
                expected = await self._resume_offset(tp)
            if expected is None:
                expected = recs[0].offset
            kept = self._trim(tp, recs, expected)
            self._next[tp] = kept[-1].offset + 1 if kept else expected
            if kept:
                out[tp] = kept
                self.received[tp.partition] += len(kept)
        return out

    def _trim(
        self, tp: TopicPartition, recs: list[ConsumerRecord[bytes, bytes]], expected: int
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """``recs`` up to the first gap not yet accepted, seeking back to that gap."""
        start = 0
        while (cut := first_gap(_Offsets(recs, start), expected)) is not None:
            cut += start
            gap = (expected if cut == start else recs[cut - 1].offset + 1, recs[cut].offset)
            self._filled(tp, gap[0])
            waited = self.timer.seen(tp, gap[0])
            where = {"partition": tp.partition, "offsets": f"{gap[0]}-{gap[1] - 1}"}
            if waited < self.timer.wait_s:
                if waited == 0.0:
                    log.info(
                        "a fetch skipped offsets; re-reading the partition from there", extra=where
                    )
                with contextlib.suppress(IllegalStateError):  # revoked meanwhile: the new
                    self.consumer.seek(tp, gap[0])  # owner resumes at or before the gap
                return recs[:cut]
            self.accepted += 1
            log.warning(
                "offsets still absent after the gap wait; accepted as a gap in the partition "
                "(compaction, retention or transaction markers)",
                extra=where,
            )
            start, expected = cut, gap[1]
        self._filled(tp, recs[-1].offset + 1)
        return recs

    def _filled(self, tp: TopicPartition, upto: int) -> None:
        waited = self.timer.filled(tp, upto)
        if waited is not None:
            self.reread += 1
            log.info(
                "the skipped records arrived on re-reading",
                extra={"partition": tp.partition, "waited_s": round(waited, 3)},
            )

    async def _resume_offset(self, tp: TopicPartition) -> int | None:
        """Where the group resumes ``tp`` (committed offset, else the log start); None if the
        broker cannot say (the first batch is then taken as it comes)."""
        try:
            committed = await self.consumer.committed(tp)
            if committed is not None and committed >= 0:
                return committed
            return (await self.consumer.beginning_offsets([tp]))[tp]
        except KafkaError as e:
            log.debug("cannot read the resume offset", extra={"partition": tp.partition, "e": e})
            return None

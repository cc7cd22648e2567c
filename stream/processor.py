"""The stream processor: Kafka readings -> validated batch -> TimescaleDB, exactly once in effect.

Per poll batch (one consumer in the ``meetnet-processor`` group; partitions are shared by all
members of the group):

1. run the pure stages at once (``stream/pipeline.py``: decode, validate, series ids, dedupe,
   rollup deltas, COPY encoding);
2. write the accepted readings with one idempotent binary COPY, merge their rollup deltas and
   move ``latest`` forward, in one transaction, and commit it;
3. produce dead letters (acks=all) for rejected readings and undecodable records, and wait;
4. only then commit the Kafka offsets of the batch.

Steps 2-4 run in a sink task while step 1 of the next batch runs (two batches in flight at
most, handled in order), so the CPU work overlaps the database's work. When the sink falls
behind (a slow or unreachable database) the polling loop pauses every partition and keeps
polling without fetching: memory stays bounded, nothing new is consumed, and the group does
not take the consumer for dead (``max.poll.interval.ms``). A repair task recomputes late
rollup buckets from the raw readings (``store/rollups.py``).

A crash anywhere before 4 replays the batch; the unique (series_id, ts) key makes the replay
add nothing, to the readings or to the rollups. Offsets are never committed for data that is
not in the database or the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from meetnet import health
from meetnet.settings import Settings
from meetnet.wire import Reason, dlq_headers
from store.catalog import RegistryCache
from store.db import DatabaseUnavailable, aconnect
from store.readings import ReadingsWriter
from store.rollups import repair_once
from stream.assignment import Assignment
from stream.gaps import OffsetGaps
from stream.pipeline import Batch, run, standard_stages, with_series
from stream.validate import Limits, Registry, registry_misses

log = logging.getLogger(__name__)

# Errors after which the same batch is simply written again: the database is unreachable or
# restarting (reconnect), or it rolled the transaction back (a deadlock with another
# processor replaying the same records during a rebalance, a serialization failure).
_RETRIABLE = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.TransactionRollback,
    DatabaseUnavailable,
)
REVOKE_WAIT_S = 10.0  # on a rebalance, how long to let the batch being written finish
PAUSE_AFTER_S = 5.0  # the sink has been behind this long: pause the partitions
PAUSED_POLL_S = 0.5  # while paused, poll (fetching nothing) at least this often


@dataclass
class Stats:
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    late_buckets: int = 0
    repaired_buckets: int = 0
    dropped_on_rebalance: int = 0  # batches given up at a rebalance (replayed by the owner)
    max_batch_readings: int = 0
    deadlettered: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage

    def timed(self, stage: str, t0: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - t0
        return now


async def _put_unless_dead(
    queue: asyncio.Queue[_Work | None], item: _Work | None, sink: asyncio.Task[None]
) -> None:
    """Hand ``item`` to the sink, unless the sink has died (a full queue would block forever)."""
    if sink.done():
        return
    put = asyncio.ensure_future(queue.put(item))
    await asyncio.wait({put, sink}, return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()


@dataclass
class _Work:
    """A prepared poll batch on its way to the database."""

    records: list[ConsumerRecord[bytes, bytes]]
    offsets: dict[TopicPartition, OffsetAndMetadata]
    batch: Batch


class Processor:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.s = settings
        self.clock = clock
        self.limits = Limits(settings.max_reading_age_s * 1000, settings.max_clock_skew_s * 1000)
        self.writer = ReadingsWriter(late_horizon_s=settings.rollup_late_horizon_s)
        self.stages = standard_stages(self.limits, self.writer, self._frames)
        self.stats = Stats()
        self._stop = asyncio.Event()
        self._conn: psycopg.AsyncConnection | None = None
        self.assignment: Assignment | None = None
        self.gaps: OffsetGaps | None = None
        self._db_error: str | None = None  # health: why the last database write failed
        self.registry = RegistryCache(settings, app="processor-registry")
        # The registry frames with our series ids, and the (registry revision, series cache
        # version) they were built from.
        self._registry: tuple[tuple[int, int], Registry] | None = None
        # Prepared batches not yet handed to the sink, the sink's queue, and the batch it is
        # writing: at most a few, see _poll_loop.
        self._backlog: deque[_Work] = deque()
        self._queue: asyncio.Queue[_Work | None] = asyncio.Queue(maxsize=1)
        self._in_sink: _Work | None = None
        self._sink_idle = asyncio.Event()
        self._taken = asyncio.Event()  # the sink took a batch from the queue
        self._paused_since: float | None = None

    def stop(self) -> None:
        self._stop.set()

    @property
    def in_flight(self) -> int:
        return len(self._backlog) + self._queue.qsize() + (self._in_sink is not None)

    def probe(self) -> health.Probe:
        """Liveness and readiness for meetnet/health.py."""
        a = self.assignment
        assigned = a.partitions if a is not None else None
        return health.Probe(
            "processor",
            alive=not self._stop.is_set(),
            checks={
                "kafka_group": health.check(assigned is not None, "no assignment from the group"),
                "database": health.check(self._db_error is None, self._db_error),
            },
            details={
                "partitions": assigned,
                "idle": assigned == [],
                "paused": self.paused,
                "in_flight_batches": self.in_flight,
            },
        )

    @property
    def paused(self) -> bool:
        return self._paused_since is not None

    async def run(self) -> None:
        if not await self.registry.start(self._stop):
            return
        try:
            await self._run()
        finally:
            await self.registry.close()

    async def _run(self) -> None:
        fetch_max = self.s.processor_fetch_max_bytes
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.s.kafka_bootstrap,
            group_id=self.s.processor_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=fetch_max,
            max_partition_fetch_bytes=min(4 * 1024 * 1024, fetch_max),
            fetch_max_wait_ms=50,
            max_poll_interval_ms=self.s.processor_max_poll_interval_ms,
            session_timeout_ms=self.s.processor_session_timeout_ms,
            heartbeat_interval_ms=max(100, self.s.processor_session_timeout_ms // 3),
        )
        self.gaps = OffsetGaps(consumer, self.s.processor_gap_wait_ms / 1000)
        self.assignment = Assignment(self.s, consumer, on_revoked=self.on_revoked, gaps=self.gaps)
        consumer.subscribe([self.s.kafka_readings_topic], listener=self.assignment)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.s.kafka_bootstrap, acks="all", linger_ms=5
        )
        await producer.start()
        await consumer.start()
        reporter = asyncio.create_task(self._report())
        repair = asyncio.create_task(self._repair_loop())
        # Two stages: while the sink writes batch k to the database and commits its offsets,
        # the polling loop prepares batch k+1. The queue holds one batch, and the sink handles
        # them strictly in order.
        sink = asyncio.create_task(self._sink(consumer, producer))
        sink.add_done_callback(lambda _: self._stop.set())
        try:
            await self._poll_loop(consumer, sink)
            # Drain: the sink finishes what was prepared, then stops.
            while self._backlog:
                await _put_unless_dead(self._queue, self._backlog.popleft(), sink)
            await _put_unless_dead(self._queue, None, sink)
            await sink  # re-raises a sink failure: exit non-zero, the supervisor restarts us
        finally:
            sink.cancel()
            reporter.cancel()
            repair.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await repair
            # Shutting down with the broker gone: aiokafka's close may surface its own tasks'
            # cancellation; neither that nor a connection error should hide a clean exit.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await consumer.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await producer.stop()
            if self._conn is not None:
                await self._conn.close()

    async def _poll_loop(self, consumer: AIOKafkaConsumer, sink: asyncio.Task[None]) -> None:
        """Poll, prepare, hand over. A prepared batch waits in the backlog while the sink's
        queue is full. If that lasts (a slow or unreachable database), every partition is
        paused and polled without fetching: Kafka keeps the records, memory stays bounded,
        and the consumer stays in its group (max.poll.interval.ms). Only records of
        partitions assigned by a rebalance in that state can still arrive: at most one more
        batch per rebalance."""
        last_poll = 0.0
        linger = self.s.processor_linger_ms / 1000
        # How long to wait for the sink before pausing: far below max.poll.interval.ms, and
        # above the time a healthy database takes for a batch (no pause/resume churn, which
        # would also drop aiokafka's prefetched records).
        hold = min(PAUSE_AFTER_S, self.s.processor_max_poll_interval_ms / 1000 / 4)
        while not self._stop.is_set() and not sink.done():
            while self._backlog and not self._queue.full():
                self._queue.put_nowait(self._backlog.popleft())
            t = time.perf_counter()
            if self._backlog:
                paused = self._paused_since is not None
                room = await self._wait_for_room(sink, PAUSED_POLL_S if paused else hold)
                t = self.stats.timed("wait_for_sink", t)
                if room:
                    continue
                self._pause(consumer)
                batch = await consumer.getmany(timeout_ms=0)
            else:
                self._resume(consumer)
                if t - last_poll < linger:
                    await asyncio.sleep(linger - (t - last_poll))
                last_poll = time.perf_counter()
                batch = await consumer.getmany(
                    timeout_ms=self.s.processor_poll_ms, max_records=self.s.processor_max_records
                )
            if self.gaps is not None:
                batch = await self.gaps.check(batch)  # never past records a fetch skipped
            t = self.stats.timed("poll", t)
            if batch:
                work = await self._confirm_registry(batch, self._prepare(batch))
                if work is None:
                    break  # stopping while the registry cannot confirm a rejection
                self._backlog.append(work)
                self.stats.timed("prepare", t)

    async def _wait_for_room(self, sink: asyncio.Task[None], timeout: float) -> bool:
        """True once the sink's queue has room (or the loop is to end), False after timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.full() and not sink.done() and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._taken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._taken.wait(), min(left, 0.1))
        return True

    def _pause(self, consumer: AIOKafkaConsumer) -> None:
        consumer.pause(*consumer.assignment())
        if self._paused_since is None:
            self._paused_since = time.monotonic()
            log.info("database sink is behind; pausing consumption", extra=self._flight())

    def _resume(self, consumer: AIOKafkaConsumer) -> None:
        if self._paused_since is not None:
            consumer.resume(*consumer.paused())
            paused = time.monotonic() - self._paused_since
            self.stats.seconds["paused"] = self.stats.seconds.get("paused", 0.0) + paused
            self._paused_since = None
            log.info("resuming consumption", extra={"paused_s": round(paused, 2)})

    def _flight(self) -> dict[str, int]:
        return {"in_flight_batches": self.in_flight}

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """A rebalance: positions restart from the committed offsets afterwards, so batches
        not yet written are dropped (the new owner, maybe us, polls them again); the batch
        being written gets a moment to finish and commit while we still own its partitions."""
        if not revoked:  # the first join of the group: nothing was ours
            return
        dropped = len(self._backlog)
        self._backlog.clear()
        keep_sentinel = False
        while not self._queue.empty():
            if self._queue.get_nowait() is None:
                keep_sentinel = True
            else:
                dropped += 1
        if keep_sentinel:
            self._queue.put_nowait(None)
        self.stats.dropped_on_rebalance += dropped
        if self._in_sink is not None:
            self._sink_idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sink_idle.wait(), REVOKE_WAIT_S)
        log.info(
            "partitions revoked",
            extra={
                "partitions": sorted(tp.partition for tp in revoked),
                "dropped_batches": dropped,
                "writing": self._in_sink is not None,
            },
        )

    async def _db(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await aconnect(self.s, app="processor")
        return self._conn

    def _prepare(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> _Work:
        records = [r for recs in batch.values() for r in recs]
        b = run(self.stages, Batch([r.value or b"" for r in records], int(self.clock() * 1000)))
        offsets = {tp: OffsetAndMetadata(recs[-1].offset + 1, "") for tp, recs in batch.items()}
        return _Work(records, offsets, b)

    def _frames(self) -> Registry:
        key = (self.registry.revision, self.writer.series.version)
        if self._registry is None or self._registry[0] != key:
            built = Registry.build(*self.registry.frames())
            self._registry = (key, with_series(built, self.writer))
        return self._registry[1]

    async def _confirm_registry(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], work: _Work
    ) -> _Work | None:
        """A registry rejection (unknown sensor or metric) stands only once a fresh lookup of
        those sensors confirms it: one registered a moment ago must not be dead-lettered. While
        the database is unreachable, wait (nothing is committed meanwhile); None if stopping."""
        assert work.batch.checked is not None
        misses = registry_misses(work.batch.checked)
        delay = 0.5
        while misses:
            changed = await self.registry.refresh_ids(misses, force=True)
            if changed is not None:
                return self._prepare(batch) if changed else work
            if self._stop.is_set():
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
        return work

    async def _sink(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        while (work := await self._queue.get()) is not None:
            self._taken.set()
            self._in_sink = work
            try:
                t = time.perf_counter()
                await self._store(work.batch)
                t = self.stats.timed("database", t)
                checked, decoded = work.batch.checked, work.batch.decoded
                assert checked is not None and decoded is not None
                await self._deadletter(producer, work.records, checked.rejects, decoded.undecodable)
                t = self.stats.timed("deadletter", t)
                try:
                    await consumer.commit(work.offsets)
                except (CommitFailedError, KafkaError) as e:
                    # The group rebalanced under us: the new owner replays these records,
                    # which the idempotent write turns into no-ops.
                    log.warning(
                        "offset commit failed; batch will be replayed", extra={"error": str(e)}
                    )
                self.stats.timed("commit", t)
                self.stats.records += len(work.records)
                self.stats.batches += 1
            finally:
                self._in_sink = None
                self._sink_idle.set()

    async def _store(self, b: Batch) -> None:
        assert b.checked is not None
        ok = b.checked.ok
        if ok.height == 0:
            return
        self.stats.max_batch_readings = max(self.stats.max_batch_readings, ok.height)
        delay = 0.5
        while True:
            try:
                conn = await self._db()
                res = await self.writer.write(
                    conn,
                    ok.select("sensor", "metric", "ts_us", "value"),
                    b.now_ms * 1000,
                    b.prepared,
                )
                self._db_error = None
                self.stats.stored += res.inserted
                self.stats.duplicates += ok.height - res.inserted
                self.stats.late_buckets += res.late_buckets
                return
            except _RETRIABLE as e:
                # Retry the same batch: nothing is committed to Kafka meanwhile, so nothing can
                # be lost, and if the lost connection had committed it, the retry is a no-op.
                log.warning("database write failed; retrying", extra={"error": str(e).strip()})
                self._db_error = str(e).strip() or type(e).__name__
                if isinstance(e, psycopg.errors.TransactionRollback) and self._conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await self._conn.rollback()
                elif self._conn is not None:
                    await self._conn.close()
                    self._conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _repair_loop(self) -> None:
        """Recompute queued rollup buckets every ``rollup_repair_interval_s``, on a connection
        of its own (processors share the queue: claims skip each other's locked marks)."""
        conn: psycopg.AsyncConnection | None = None
        every = self.s.rollup_repair_interval_s
        delay = every
        try:
            while True:
                await asyncio.sleep(delay)
                try:
                    if conn is None or conn.closed:
                        conn = await aconnect(self.s, app="processor-repair")
                    while (n := await repair_once(conn)) > 0:
                        self.stats.repaired_buckets += n
                    delay = every
                except _RETRIABLE as e:
                    log.warning("rollup repair failed; retrying", extra={"error": str(e).strip()})
                    if conn is not None:
                        await conn.close()
                    conn = None
                    delay = min(max(delay * 2, 1.0), 30.0)
                except psycopg.Error:
                    log.exception("rollup repair failed")
                    if conn is not None:
                        await conn.close()
                    conn = None
                    delay = 60.0
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _deadletter(
        self,
        producer: AIOKafkaProducer,
        records: list[ConsumerRecord[bytes, bytes]],
        rejects: pl.DataFrame,
        undecodable: list[int],
    ) -> None:
        if rejects.height == 0 and not undecodable:
            return
        now_ms = int(self.clock() * 1000)
        futures = []
        for i in undecodable:
            r = records[i]
            futures.append(
                await producer.send(
                    self.s.kafka_deadletter_topic,
                    r.value,
                    key=r.key,
                    headers=dlq_headers(
                        Reason.UNDECODABLE_RECORD,
                        "record value is not a meetnet readings record",
                        f"kafka:{r.topic}/{r.partition}/{r.offset}",
                        "processor",
                        now_ms,
                    ),
                )
            )
            self.stats.deadlettered[Reason.UNDECODABLE_RECORD.value] += 1
        # One dead letter per (record, reason) with the rejected readings of that record.
        groups = rejects.group_by(["rec", "reason"], maintain_order=True).agg(
            pl.first("sensor"),
            pl.first("detail"),
            pl.first("rx"),
            pl.struct("metric", "ts", "value").alias("r"),
        )
        for rec, reason, sensor, detail, rx, readings in groups.iter_rows():
            r = records[rec]
            body = pl.DataFrame({"sensor": [sensor], "readings": [readings]}).write_ndjson()
            futures.append(
                await producer.send(
                    self.s.kafka_deadletter_topic,
                    body.strip().encode(),
                    key=r.key,
                    headers=dlq_headers(
                        Reason(reason),
                        detail,
                        f"kafka:{r.topic}/{r.partition}/{r.offset}",
                        "processor",
                        rx if rx is not None else now_ms,  # when the gateway received it
                    ),
                )
            )
            self.stats.deadlettered[reason] += len(readings)
        await asyncio.gather(*futures)

    async def _report(self) -> None:
        last: tuple[int, ...] = ()
        while True:
            await asyncio.sleep(10)
            st = self.stats
            cur = (
                st.records,
                st.stored,
                sum(st.deadlettered.values()),
                st.repaired_buckets,
                self.in_flight,
            )
            if cur != last:
                log.info(
                    "processor stats",
                    extra={
                        "records": st.records,
                        "stored": st.stored,
                        "duplicates_skipped": st.duplicates,
                        "deadlettered": dict(st.deadlettered),
                        "batches": st.batches,
                        "late_buckets": st.late_buckets,
                        "repaired_buckets": st.repaired_buckets,
                        "dropped_on_rebalance": st.dropped_on_rebalance,
                        "max_batch_readings": st.max_batch_readings,
                        "in_flight_batches": self.in_flight,
                        "paused": self._paused_since is not None,
                        "seconds": {k: round(v, 2) for k, v in st.seconds.items()},
                        "received": _received(self.gaps),
                    },
                )
                last = cur


def main(settings: Settings) -> None:
    proc = Processor(settings)

    async def _main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, proc.stop)
        log.info(
            "processor started",
            extra={"topic": settings.kafka_readings_topic, "group": settings.processor_group},
        )
        async with health.serve(settings.health_host, settings.health_port, proc.probe):
            await proc.run()
        log.info(
            "processor stopped",
            extra={
                "records": proc.stats.records,
                "stored": proc.stats.stored,
                "batches": proc.stats.batches,
                "max_batch_readings": proc.stats.max_batch_readings,
                "late_buckets": proc.stats.late_buckets,
                "repaired_buckets": proc.stats.repaired_buckets,
                "seconds": {k: round(v, 2) for k, v in proc.stats.seconds.items()},
                "received": _received(proc.gaps),
            },
        )

    asyncio.run(_main())


def _received(gaps: OffsetGaps | None) -> dict[int, int]:
    """Records polled per partition (with replays): tells a record never fetched from one
    lost after the poll."""
    return dict(sorted(gaps.received.items())) if gaps is not None else {}

"""The stream processor: Kafka readings -> validated batch -> TimescaleDB, exactly once in effect.

Per poll batch (one consumer in the ``meetnet-processor`` group; partitions are shared by all
members of the group):

1. decode every record value at once (Polars NDJSON), validate with expressions;
2. write the accepted readings with one idempotent binary COPY and commit the transaction;
3. produce dead letters (acks=all) for rejected readings and undecodable records, and wait;
4. only then commit the Kafka offsets of the batch.

Steps 2-4 run in a sink task while step 1 of the next batch runs (two batches in flight at
most, handled in order), so decoding overlaps the database's work.

A crash anywhere before 4 replays the batch; the unique (series_id, ts) key makes the replay
add nothing. Offsets are never committed for data that is not in the database or the
dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
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
from stream.assignment import Assignment
from stream.decode import decode
from stream.validate import Checked, Limits, Registry, check, registry_misses

log = logging.getLogger(__name__)


@dataclass
class Stats:
    records: int = 0
    stored: int = 0
    duplicates: int = 0
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
    """A decoded, validated poll batch on its way to the database."""

    records: list[ConsumerRecord[bytes, bytes]]
    offsets: dict[TopicPartition, OffsetAndMetadata]
    checked: Checked
    undecodable: list[int]


class Processor:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.s = settings
        self.clock = clock
        self.limits = Limits(settings.max_reading_age_s * 1000, settings.max_clock_skew_s * 1000)
        self.writer = ReadingsWriter()
        self.stats = Stats()
        self._stop = asyncio.Event()
        self._conn: psycopg.AsyncConnection | None = None
        self.assignment: Assignment | None = None
        self._db_error: str | None = None  # health: why the last database write failed
        self.registry = RegistryCache(settings, app="processor-registry")
        self._registry: tuple[int, Registry] | None = None

    def stop(self) -> None:
        self._stop.set()

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
            details={"partitions": assigned, "idle": assigned == []},
        )

    async def run(self) -> None:
        if not await self.registry.start(self._stop):
            return
        try:
            await self._run()
        finally:
            await self.registry.close()

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.s.kafka_bootstrap,
            group_id=self.s.processor_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=50,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.s.kafka_bootstrap, acks="all", linger_ms=5
        )
        self.assignment = Assignment(self.s, consumer)
        consumer.subscribe([self.s.kafka_readings_topic], listener=self.assignment)
        await producer.start()
        await consumer.start()
        reporter = asyncio.create_task(self._report())
        # Two stages: while the sink writes batch k to the database and commits its offsets,
        # this loop polls and decodes batch k+1. The queue holds one batch, so at most two are
        # in flight, and the sink handles them strictly in order.
        queue: asyncio.Queue[_Work | None] = asyncio.Queue(maxsize=1)
        sink = asyncio.create_task(self._sink(consumer, producer, queue))
        sink.add_done_callback(lambda _: self._stop.set())
        try:
            last_poll = 0.0
            linger = self.s.processor_linger_ms / 1000
            while not self._stop.is_set():
                t = time.perf_counter()
                if t - last_poll < linger:
                    await asyncio.sleep(linger - (t - last_poll))
                last_poll = time.perf_counter()
                batch = await consumer.getmany(
                    timeout_ms=self.s.processor_poll_ms, max_records=self.s.processor_max_records
                )
                t = self.stats.timed("poll", t)
                if batch and not sink.done():
                    work = await self._confirm_registry(batch, self._prepare(batch))
                    if work is None:
                        break  # stopping while the registry cannot confirm a rejection
                    t = self.stats.timed("decode_validate", t)
                    await _put_unless_dead(queue, work, sink)
                    self.stats.timed("wait_for_sink", t)
            # Drain: the sink finishes what it has, then stops.
            await _put_unless_dead(queue, None, sink)
            await sink  # re-raises a sink failure: exit non-zero, the supervisor restarts us
        finally:
            sink.cancel()
            reporter.cancel()
            # Shutting down with the broker gone: aiokafka's close may surface its own tasks'
            # cancellation; neither that nor a connection error should hide a clean exit.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await consumer.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await producer.stop()
            if self._conn is not None:
                await self._conn.close()

    async def _db(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await aconnect(self.s, app="processor")
        return self._conn

    def _prepare(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> _Work:
        records = [r for recs in batch.values() for r in recs]
        decoded = decode([r.value or b"" for r in records])
        checked = check(decoded.readings, int(self.clock() * 1000), self.limits, self._frames())
        offsets = {tp: OffsetAndMetadata(recs[-1].offset + 1, "") for tp, recs in batch.items()}
        return _Work(records, offsets, checked, decoded.undecodable)

    def _frames(self) -> Registry:
        if self._registry is None or self._registry[0] != self.registry.revision:
            self._registry = (self.registry.revision, Registry.build(*self.registry.frames()))
        return self._registry[1]

    async def _confirm_registry(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], work: _Work
    ) -> _Work | None:
        """A registry rejection (unknown sensor or metric) stands only once a fresh lookup of
        those sensors confirms it: one registered a moment ago must not be dead-lettered. While
        the database is unreachable, wait (nothing is committed meanwhile); None if stopping."""
        misses = registry_misses(work.checked)
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

    async def _sink(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        queue: asyncio.Queue[_Work | None],
    ) -> None:
        while (work := await queue.get()) is not None:
            t = time.perf_counter()
            await self._store(work.checked.ok)
            t = self.stats.timed("database", t)
            await self._deadletter(producer, work.records, work.checked.rejects, work.undecodable)
            t = self.stats.timed("deadletter", t)
            try:
                await consumer.commit(work.offsets)
            except (CommitFailedError, KafkaError) as e:
                # The group rebalanced under us: the new owner replays these records, which
                # the idempotent write turns into no-ops.
                log.warning("offset commit failed; batch will be replayed", extra={"error": str(e)})
            self.stats.timed("commit", t)
            self.stats.records += len(work.records)
            self.stats.batches += 1

    async def _store(self, ok: pl.DataFrame) -> None:
        if ok.height == 0:
            return
        delay = 0.5
        while True:
            try:
                conn = await self._db()
                res = await self.writer.write(conn, ok.select("sensor", "metric", "ts_us", "value"))
                self._db_error = None
                self.stats.stored += res.inserted
                self.stats.duplicates += ok.height - res.inserted
                return
            except (psycopg.OperationalError, DatabaseUnavailable) as e:
                # The database is down or restarting: retry the same batch; nothing is
                # committed to Kafka meanwhile, so nothing can be lost.
                log.warning("database unavailable; retrying", extra={"error": str(e)})
                self._db_error = str(e) or type(e).__name__
                if self._conn is not None:
                    await self._conn.close()
                    self._conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

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
        last: tuple[int, int, int] = (0, 0, 0)
        while True:
            await asyncio.sleep(10)
            cur = (self.stats.records, self.stats.stored, sum(self.stats.deadlettered.values()))
            if cur != last:
                log.info(
                    "processor stats",
                    extra={
                        "records": self.stats.records,
                        "stored": self.stats.stored,
                        "duplicates_skipped": self.stats.duplicates,
                        "deadlettered": dict(self.stats.deadlettered),
                        "batches": self.stats.batches,
                        "seconds": {k: round(v, 2) for k, v in self.stats.seconds.items()},
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
                "seconds": {k: round(v, 2) for k, v in proc.stats.seconds.items()},
            },
        )

    asyncio.run(_main())

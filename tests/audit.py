"""Where readings the database lacks are, per Kafka partition: for failure messages.

A reading published over MQTT and accepted by a gateway can be missing from the database
because it is
  (a) in no record of the readings topic (never produced, or produced and acked but lost by
      the broker; a partition whose offsets read back with holes points at the broker),
  (c) in Kafka below the offset the processors' group committed, and never returned by a
      fetch to the processor that owned the partition (it polled fewer records than the
      partition holds),
  (d) in Kafka below the committed offset and returned to a processor, then dropped by
      meetnet (processors polled at least as many records as the partition holds; replays
      after a restart can hide a (c) here),
  (e) in Kafka at or above the committed offset: not processed yet, or a processor stuck.
(b), records at offsets that collide, shows as (a) plus holes or repeated offsets.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from meetnet.settings import Settings

Reading = tuple  # (sensor_id, metric, ts_ms, value), as the scale-out test writes them


class _Topic:
    """The readings topic read from the start: per partition its offsets, and where each
    reading (sensor, metric, ts) is."""

    def __init__(self) -> None:
        self.offsets: dict[int, list[int]] = defaultdict(list)
        self.where: dict[tuple[str, str, object], tuple[int, int]] = {}
        self.high: dict[int, int | None] = {}
        self.committed: dict[int, int | None] = {}


async def _read(s: Settings, quiet_s: float) -> _Topic:
    topic = _Topic()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()  # load metadata
        parts = consumer.partitions_for_topic(s.kafka_readings_topic) or set()
        tps = [TopicPartition(s.kafka_readings_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while batch := await consumer.getmany(timeout_ms=int(quiet_s * 1000)):
            for tp, recs in batch.items():
                for r in recs:
                    topic.offsets[tp.partition].append(r.offset)
                    for line in (r.value or b"").splitlines():
                        d = json.loads(line)
                        topic.where[(d["sensor"], d["metric"], d["ts"])] = (tp.partition, r.offset)
        topic.high = {tp.partition: consumer.highwater(tp) for tp in tps}
    finally:
        await consumer.stop()
    group = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap, group_id=s.processor_group, enable_auto_commit=False
    )
    await group.start()
    try:
        for tp in tps:
            topic.committed[tp.partition] = await group.committed(tp)
    finally:
        await group.stop()
    return topic


def polled_per_partition(logs: Path) -> Counter[int]:
    """Records the processors polled per partition, from their logs' ``received`` stats (the
    last line of each run of each processor, summed: replays count again)."""
    total: Counter[int] = Counter()
    for log in sorted(logs.glob("processor*.log")):
        for run in log.read_text(errors="replace").split("processor started")[1:]:
            found = re.findall(r'received="?(\{[^}]*\})', run)
            if found:
                total.update({int(k): v for k, v in json.loads(found[-1]).items()})
    return total


def _holes(offsets: list[int], high: int | None) -> str:
    seen = Counter(offsets)
    end = max(high or 0, max(offsets, default=-1) + 1)
    holes = [o for o in range(end) if o not in seen]
    repeats = [o for o, n in seen.items() if n > 1]
    out = f"holes {_ranges(holes)}" if holes else ""
    return out + (f" repeated offsets {_ranges(repeats)}" if repeats else "")


def _ranges(xs: Iterable[int]) -> str:
    """[3, 4, 5, 9] -> "[3-5, 9]" (at most 20 ranges)."""
    runs: list[list[int]] = []
    for x in sorted(set(xs)):
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    text = [str(a) if a == b else f"{a}-{b}" for a, b in runs[:20]]
    return "[" + ", ".join(text) + (", ..." if len(runs) > 20 else "") + "]"


def explain_missing(
    s: Settings, missing: Iterable[Reading], logs: Path | None, quiet_s: float = 1.5
) -> str:
    """Per partition, which of (a)-(e) above each missing reading is in."""
    missing = list(missing)
    if not missing:
        return "no reading is missing"
    try:
        topic = asyncio.run(_read(s, quiet_s))
    except Exception as e:  # diagnostics must not hide the real failure
        return f"(kafka audit unavailable: {e})"
    polled = polled_per_partition(logs) if logs is not None else Counter()
    parts = sorted(topic.high)
    hash_ = DefaultPartitioner()
    cases: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    absent: Counter[int] = Counter()  # (a): readings per partition their key hashes to
    for sensor, metric, ts, _value in missing:
        at = topic.where.get((sensor, metric, ts))
        if at is None:
            absent[hash_(sensor.encode(), parts, parts)] += 1
            continue
        p, offset = at
        done = topic.committed.get(p)
        if done is None or offset >= done:
            cases[p]["e"].add(offset)
        elif polled[p] < len(topic.offsets[p]):
            cases[p]["c"].add(offset)
        else:
            cases[p]["d"].add(offset)
    lines = [f"{len(missing)} readings missing from the database, per Kafka partition:"]
    for p in sorted(set(cases) | set(absent)):
        high, done = topic.high.get(p), topic.committed.get(p)
        head = (
            f"  partition {p}: {len(topic.offsets[p])} records in Kafka, high watermark {high}, "
            f"group committed {done}, processors polled {polled[p] if logs else '?'} "
        )
        lines.append((head + _holes(topic.offsets[p], high)).rstrip())
        c = cases[p]
        if absent[p]:
            lines.append(
                f"    (a) {absent[p]} readings (keyed to this partition) in no Kafka record: "
                "not produced, or acked and lost by the broker"
            )
        if c["c"]:
            lines.append(
                f"    (c) in Kafka at offsets {_ranges(c['c'])} below the committed offset, "
                "never returned to the processor that owned the partition"
            )
        if c["d"]:
            lines.append(
                f"    (d) in Kafka at offsets {_ranges(c['d'])} below the committed offset, "
                "polled by a processor and dropped by meetnet (or (c) hidden by replays)"
            )
        if c["e"]:
            lines.append(
                f"    (e) in Kafka at offsets {_ranges(c['e'])} at or above the committed "
                "offset: not processed yet"
            )
    return "\n".join(lines)

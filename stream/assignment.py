"""The processor's view of its consumer group: which partitions it owns, and saying so.

A processor that gets no partition (more group members than partitions) logs it and idles:
the group protocol gives each partition to exactly one member, so an extra processor never
processes anything twice; it takes over when a member leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from meetnet.settings import Settings
from stream.gaps import OffsetGaps

log = logging.getLogger(__name__)


class Assignment(ConsumerRebalanceListener):
    """Which partitions this processor owns, logged on every rebalance. A processor that gets
    none (more group members than partitions) says so and idles: the group protocol gives
    each partition to exactly one member, so an extra processor never processes anything
    twice; it takes over when a member leaves."""

    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        on_revoked: Callable[[set[TopicPartition]], Awaitable[None]] | None = None,
        gaps: OffsetGaps | None = None,
    ) -> None:
        self.s = settings
        self.consumer = consumer
        self._on_revoked = on_revoked  # the processor's hand-over of batches in flight
        self.gaps = gaps  # forgets where revoked partitions were: the group says where to resume
        self.partitions: list[int] | None = None  # None until the group first assigned us
        self._idle_log: asyncio.Task[None] | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.gaps is not None:
            self.gaps.forget(revoked)
        if self._on_revoked is not None:
            await self._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.gaps is not None:
            self.gaps.forget(assigned)
        self.partitions = sorted(tp.partition for tp in assigned)
        if self.partitions:
            log.info("partitions assigned", extra={"partitions": self.partitions})
        elif self._idle_log is None or self._idle_log.done():
            # Not inline: the rebalance must not wait for the group description.
            self._idle_log = asyncio.create_task(self._log_idle())

    async def _log_idle(self) -> None:
        topic = self.s.kafka_readings_topic
        n_parts = len(self.consumer.partitions_for_topic(topic) or ())
        members = await _group_members(self.s)
        log.warning(
            f"no partitions assigned: {members if members is not None else 'more'} members "
            f"for {n_parts} partitions; this processor idles until a member leaves or "
            "partitions are added",
            extra={"topic": topic, "group": self.s.processor_group},
        )


async def _group_members(settings: Settings) -> int | None:
    """Members of the processors' consumer group (DescribeGroups), or None if unknown."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        await asyncio.wait_for(admin.start(), 5)
        resp = await asyncio.wait_for(admin.describe_consumer_groups([settings.processor_group]), 5)
        return sum(len(g[5]) for r in resp for g in r.groups if g[1] == settings.processor_group)
    except Exception as e:  # only a log line depends on it
        log.debug("cannot describe the consumer group", extra={"error": str(e)})
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()

"""The ingest gateway's registry checks: who may publish what, per MQTT message.

A message that passed the wire checks is judged against the cached registry
(``store.catalog.RegistryCache``) with a few dictionary look-ups per message and per sensor
group, never per reading:

* device topic ``<prefix>/sensors/<id>``: an unregistered sensor is ``unknown_sensor``, a
  retired one ``sensor_retired`` (``maintenance`` is accepted); the whole message is
  dead-lettered;
* gateway topic ``<prefix>/gateways/<id>``: an unregistered gateway is ``unknown_gateway``, a
  retired one ``gateway_retired`` (whole message); then each sensor group on its own: an
  unregistered sensor ``unknown_sensor``, a sensor not assigned to this gateway
  (``sensors.gateway_id``) ``gateway_not_owner``, a retired sensor ``sensor_retired``. Only
  the offending groups are dead-lettered; the other sensors' groups go on.

**Refresh before reject.** Every negative answer is provisional until the database confirms
it with a lookup that started after the message was received (a sensor registered a moment ago
must not be rejected by a cache that has not heard of it yet). :meth:`Gate.decide` batches the
lookups of one flush and looks an id up at most once per ``lookup_interval_s``; a message
whose answer cannot be confirmed yet (rate limit, database unreachable) is *deferred*: not
forwarded, not dead-lettered, not acknowledged, and decided again later.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from meetnet.wire import Accepted, Reason
from store.catalog import RegistryCache, Snapshot


@dataclass(frozen=True, slots=True)
class Judgement:
    """The registry's answer for one message. Empty: accepted as it is."""

    whole: tuple[Reason, str] | None = None  # reject the whole message
    groups: dict[str, tuple[Reason, str]] = field(default_factory=dict)  # sensor -> reject
    ids: tuple[str, ...] = ()  # the ids a negative answer rests on

    @property
    def negative(self) -> bool:
        return bool(self.ids)


OK = Judgement()


def judge(snap: Snapshot, acc: Accepted) -> Judgement:
    """Pure: the answer of ``snap`` for one validated message."""
    ident = acc.ident
    if acc.kind == "sensors":
        info = snap.sensors.get(ident)
        if info is None:
            return Judgement(
                (Reason.UNKNOWN_SENSOR, f"sensor {ident!r} is not registered"), ids=(ident,)
            )
        if info.status == "retired":
            return Judgement((Reason.SENSOR_RETIRED, f"sensor {ident!r} is retired"), ids=(ident,))
        return OK
    status = snap.gateways.get(ident)
    if status is None:
        return Judgement(
            (Reason.UNKNOWN_GATEWAY, f"gateway {ident!r} is not registered"), ids=(ident,)
        )
    if status == "retired":
        return Judgement((Reason.GATEWAY_RETIRED, f"gateway {ident!r} is retired"), ids=(ident,))
    bad: dict[str, tuple[Reason, str]] = {}
    seen: set[str] = set()
    for sensor, _, _ in acc.parts:
        if sensor in seen:
            continue
        seen.add(sensor)
        info = snap.sensors.get(sensor)
        if info is None:
            bad[sensor] = (Reason.UNKNOWN_SENSOR, f"sensor {sensor!r} is not registered")
        elif info.gateway_id != ident:
            bad[sensor] = (
                Reason.GATEWAY_NOT_OWNER,
                f"sensor {sensor!r} is not assigned to gateway {ident!r}",
            )
        elif info.status == "retired":
            bad[sensor] = (Reason.SENSOR_RETIRED, f"sensor {sensor!r} is retired")
    return Judgement(groups=bad, ids=tuple(bad)) if bad else OK


class Gate:
    """Judges flush batches, confirming negative answers against the database first."""

    def __init__(self, cache: RegistryCache, clock: Callable[[], float] | None = None) -> None:
        self.cache = cache
        self.clock = clock or cache.clock

    def _unconfirmed(self, j: Judgement, received: float) -> list[str]:
        return [i for i in j.ids if self.cache.confirmed_at(i) <= received]

    async def decide(
        self, items: Sequence[tuple[float, Accepted]]
    ) -> tuple[list[Judgement | None], float]:
        """Judge ``(received_monotonic, message)`` pairs. Returns one judgement per message,
        None for a deferred one, and when to try the deferred ones again (inf: none)."""
        snap = self.cache.snapshot
        out: list[Judgement | None] = [judge(snap, acc) for _, acc in items]
        doubt = [
            k for k, j in enumerate(out) if j is not None and self._unconfirmed(j, items[k][0])
        ]
        if not doubt:
            return out, math.inf
        # A lookup can raise new questions (a gateway found, then its sensors are unknown):
        # a few rounds, each one batched lookup of the ids still in doubt.
        for _ in range(3):
            want = {i for k in doubt for i in self._unconfirmed(out[k] or OK, items[k][0])}
            if await self.cache.refresh_ids(want) is None:  # rate-limited per id
                break  # the database is unreachable: decide later
            snap = self.cache.snapshot
            for k in doubt:
                out[k] = judge(snap, items[k][1])
            doubt = [k for k in doubt if self._unconfirmed(out[k] or OK, items[k][0])]
            if not doubt:
                break
        retry = math.inf
        for k in doubt:
            received, acc = items[k]
            j = judge(self.cache.snapshot, acc)
            pending = self._unconfirmed(j, received)
            if pending:
                out[k] = None
                retry = min(retry, max(self.cache.next_lookup_at(i) for i in pending))
            else:
                out[k] = j
        return out, retry

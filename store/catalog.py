"""The registry as the ingest gateway and the stream processor see it: a cached snapshot of
sensors, gateways and the metrics of each sensor type, kept fresh by LISTEN/NOTIFY.

Refresh rules (:class:`RegistryCache`):

* **Start**: the whole snapshot is loaded (one REPEATABLE READ transaction); until that works
  :meth:`RegistryCache.start` retries.
* **Change**: every registry write sends ``NOTIFY meetnet_registry`` (migration 0002); the cache
  reloads the whole snapshot within milliseconds. Every ``MEETNET_REGISTRY_POLL_S`` it also
  compares ``registry_state.version`` with its own, in case a notification was missed (a
  reconnect, a proxy that drops them).
* **Miss**: a negative answer (unknown sensor, a sensor not owned by the publishing gateway, a
  metric outside the sensor's type, ...) may come from a snapshot that is a moment too old, so
  callers confirm it with :meth:`RegistryCache.refresh_ids`, a fresh lookup of just those ids,
  before they reject anything. :meth:`confirmed_at` says when the cache last saw an id in the
  database: an answer is final for a message received before that instant.

Timestamps are ``time.monotonic()`` taken just *before* the query is sent, so whatever was
committed before the stamp is in the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import polars as pl
import psycopg

from meetnet.settings import Settings
from store.db import DatabaseUnavailable, aconnect

log = logging.getLogger(__name__)

CHANNEL = "meetnet_registry"
_SENSORS = "SELECT sensor_id, status, gateway_id, type_id FROM sensors"
_GATEWAYS = "SELECT gateway_id, status FROM gateways"
_TYPE_METRICS = (
    "SELECT type_id, array_agg(metric ORDER BY metric) FROM sensor_type_metrics GROUP BY 1"
)
_VERSION = "SELECT version FROM registry_state"
_LOOKUP_SENSORS = (
    "SELECT s.sensor_id, s.status, s.gateway_id, s.type_id, "
    "ARRAY(SELECT m.metric FROM sensor_type_metrics m WHERE m.type_id = s.type_id) "
    "FROM sensors s WHERE s.sensor_id = ANY(%s)"
)
_LOOKUP_GATEWAYS = "SELECT gateway_id, status FROM gateways WHERE gateway_id = ANY(%s)"
_RETRYABLE = (psycopg.OperationalError, DatabaseUnavailable)


@dataclass(frozen=True, slots=True)
class SensorInfo:
    status: str  # active | maintenance | retired
    gateway_id: str | None  # the gateway that may publish for it
    type_id: str


@dataclass
class Snapshot:
    version: int = -1
    sensors: dict[str, SensorInfo] = field(default_factory=dict)
    gateways: dict[str, str] = field(default_factory=dict)  # gateway id -> status
    type_metrics: dict[str, frozenset[str]] = field(default_factory=dict)


async def load_snapshot(conn: psycopg.AsyncConnection) -> Snapshot:
    """The whole registry, consistent as of one instant."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = await (await conn.execute(_VERSION)).fetchone()
        sensors = await (await conn.execute(_SENSORS)).fetchall()
        gateways = await (await conn.execute(_GATEWAYS)).fetchall()
        metrics = await (await conn.execute(_TYPE_METRICS)).fetchall()
    return Snapshot(
        version=int(row[0]) if row else 0,
        sensors={s: SensorInfo(st, gw, t) for s, st, gw, t in sensors},
        gateways={g: st for g, st in gateways},
        type_metrics={t: frozenset(ms) for t, ms in metrics},
    )


async def registry_version(conn: psycopg.AsyncConnection) -> int:
    row = await (await conn.execute(_VERSION)).fetchone()
    return int(row[0]) if row else 0


class RegistryCache:
    """A :class:`Snapshot` that follows the database; one per process (gateway, processor).

    Not thread-safe: use it from one event loop. Database work is serialised by a lock, so a
    lookup never runs inside a reload's transaction.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        app: str,
        lookup_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s = settings
        self.app = app
        self.lookup_interval_s = lookup_interval_s
        self.clock = clock
        self.snapshot = Snapshot()
        self.loaded_at = -math.inf  # stamp of the load that built the snapshot
        self.revision = 0  # bumped whenever the snapshot's content changes
        self.lookups = 0
        self.reloads = 0
        self._checked: dict[str, float] = {}  # id -> stamp of its latest lookup
        self._db_retry_at = -math.inf  # after a failed lookup, no new one before this
        self._db_delay = 0.5
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._frames: tuple[int, pl.DataFrame, pl.DataFrame] | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Load the snapshot (retrying while the database is unreachable) and start following
        changes. Returns False if ``stop`` was set before the first load succeeded."""
        delay = 0.5
        while not await self.reload():
            if stop is not None and stop.is_set():
                return False
            log.warning("registry unavailable; retrying", extra={"retry_s": delay})
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10)
        self._watcher = asyncio.create_task(self._watch())
        log.info(
            "registry loaded",
            extra={
                "sensors": len(self.snapshot.sensors),
                "gateways": len(self.snapshot.gateways),
                "version": self.snapshot.version,
            },
        )
        return True

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _db(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await aconnect(self.s, app=self.app, autocommit=True)
        return self._conn

    async def _drop_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    # --- refreshing ---------------------------------------------------------------------------
    async def reload(self) -> bool:
        """Load the whole snapshot again; False (keeping the old one) if the database is down."""
        async with self._lock:
            stamp = self.clock()
            try:
                snap = await load_snapshot(await self._db())
            except _RETRYABLE as e:
                log.debug("registry reload failed", extra={"error": str(e)})
                await self._drop_conn()
                return False
        changed = (
            snap.sensors != self.snapshot.sensors
            or snap.gateways != self.snapshot.gateways
            or snap.type_metrics != self.snapshot.type_metrics
        )
        self.snapshot, self.loaded_at = snap, stamp
        self._checked.clear()  # the reload covers every id, and it is newer
        self.reloads += 1
        if changed:
            self.revision += 1
        return True

    def confirmed_at(self, ident: str) -> float:
        """When the database last answered for ``ident`` (a sensor or gateway id)."""
        return max(self.loaded_at, self._checked.get(ident, -math.inf))

    def next_lookup_at(self, ident: str) -> float:
        """The earliest time :meth:`refresh_ids` will look ``ident`` up again."""
        return max(self._checked.get(ident, -math.inf) + self.lookup_interval_s, self._db_retry_at)

    async def refresh_ids(self, ids: Iterable[str], *, force: bool = False) -> bool | None:
        """Look these sensor/gateway ids up in the database now, in one round trip each for
        sensors and gateways, and update the snapshot. Ids looked up less than
        ``lookup_interval_s`` ago are skipped unless ``force``. Returns whether the snapshot
        changed, or None if the database is unreachable (the snapshot is kept)."""
        now = self.clock()
        want = sorted({i for i in ids if force or self.next_lookup_at(i) <= now})
        if not want:
            return False
        async with self._lock:
            stamp = self.clock()
            try:
                conn = await self._db()
                sensors = await (await conn.execute(_LOOKUP_SENSORS, (want,))).fetchall()
                gateways = await (await conn.execute(_LOOKUP_GATEWAYS, (want,))).fetchall()
            except _RETRYABLE as e:
                log.warning("registry lookup failed; will retry", extra={"error": str(e)})
                await self._drop_conn()
                self._db_retry_at = stamp + self._db_delay
                self._db_delay = min(self._db_delay * 2, 10.0)
                return None
        self._db_delay = 0.5
        self._db_retry_at = -math.inf
        self.lookups += 1
        if stamp < self.loaded_at:
            return False  # a reload that started later already holds newer data
        return self._apply(want, stamp, sensors, gateways)

    def _apply(
        self, want: list[str], stamp: float, sensors: list[tuple], gateways: list[tuple]
    ) -> bool:
        snap = self.snapshot
        found_s = {s: (SensorInfo(st, gw, t), frozenset(ms)) for s, st, gw, t, ms in sensors}
        found_g = {g: st for g, st in gateways}
        changed = False
        for ident in want:
            self._checked[ident] = stamp
            new = found_s.get(ident)
            if new is None:
                changed |= snap.sensors.pop(ident, None) is not None
            else:
                info, metrics = new
                if snap.sensors.get(ident) != info:
                    snap.sensors[ident] = info
                    changed = True
                if snap.type_metrics.get(info.type_id) != metrics:
                    snap.type_metrics[info.type_id] = metrics
                    changed = True
            status = found_g.get(ident)
            if status is None:
                changed |= snap.gateways.pop(ident, None) is not None
            elif snap.gateways.get(ident) != status:
                snap.gateways[ident] = status
                changed = True
        if changed:
            self.revision += 1
        return changed

    async def _watch(self) -> None:
        """LISTEN for changes; poll the version as a fallback; survive database outages."""
        delay = 0.5
        while True:
            conn: psycopg.AsyncConnection | None = None
            try:
                conn = await aconnect(self.s, app=f"{self.app}-listen", autocommit=True)
                await conn.execute(f"LISTEN {CHANNEL}")
                # Changes made while we were not listening: compare versions once.
                if await registry_version(conn) != self.snapshot.version:
                    await self.reload()
                delay = 0.5
                while True:
                    poll = self.s.registry_poll_s
                    got = [n async for n in conn.notifies(timeout=poll, stop_after=1)]
                    if got:
                        # Coalesce a burst of writes into one reload.
                        while [n async for n in conn.notifies(timeout=0.02)]:
                            pass
                        await self.reload()
                    elif await registry_version(conn) != self.snapshot.version:
                        await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning(
                    "registry listener lost the database; retrying",
                    extra={"error": str(e), "retry_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    # --- frames for vectorized checks (stream processor) -------------------------------------
    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """``(sensors, pairs)``: every registered sensor id (column ``sensor``) and every
        allowed ``(sensor, metric)`` pair, rebuilt only when the snapshot changed."""
        if self._frames is None or self._frames[0] != self.revision:
            snap = self.snapshot
            sensors = pl.DataFrame(
                {
                    "sensor": list(snap.sensors),
                    "type_id": [i.type_id for i in snap.sensors.values()],
                },
                schema={"sensor": pl.String, "type_id": pl.String},
            )
            types = pl.DataFrame(
                {
                    "type_id": list(snap.type_metrics),
                    "metric": [sorted(m) for m in snap.type_metrics.values()],
                },
                schema={"type_id": pl.String, "metric": pl.List(pl.String)},
            ).explode("metric", empty_as_null=False)
            pairs = sensors.join(types, on="type_id").select("sensor", "metric")
            self._frames = (self.revision, sensors.select("sensor"), pairs)
        return self._frames[1], self._frames[2]

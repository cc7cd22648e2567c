"""The processor's pure path as a list of stages over one poll batch, with no I/O.

record values -> ``decode`` -> ``validate`` -> ``series`` (ids from the in-memory cache) ->
``dedupe`` (sorted, one row per reading) -> ``rollups`` (deltas of every level) -> ``encode``
(the binary COPY) [-> detection, appended by its own module]. The processor runs these stages
in its polling loop, overlapping the database work of the previous batch; ``meetnet bench
stream`` runs the same list on in-memory batches and times each stage.

A stage is a name and a function that reads and fills fields of a :class:`Batch`. A stage after
``validate`` sees the accepted readings as ``batch.checked.ok`` (rec, sensor, metric, ts_us,
value, rx). When the batch holds a series the cache does not know yet, ``series`` leaves
``series_id`` unset and the later stages skip: the sink then creates the series and prepares
the rows itself (``ReadingsWriter.write``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from store.copy import readings_rows
from store.readings import Prepared, ReadingsWriter
from stream.decode import Decoded, decode
from stream.rollups import Deltas, Rows, deltas, sort_unique
from stream.validate import Checked, Limits, Registry, check


@dataclass
class Batch:
    values: list[bytes]
    now_ms: int  # the processor's clock for this batch (event-time window, late horizon)
    decoded: Decoded | None = None
    checked: Checked | None = None
    series_id: pl.Series | None = None  # aligned with checked.ok; None if a series is unknown
    rows: Rows | None = None
    deltas: Deltas | None = None
    copy: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # outputs of stages added later

    @property
    def prepared(self) -> Prepared | None:
        if self.rows is None or self.copy is None or self.deltas is None:
            return None
        return Prepared(self.rows, self.copy, self.deltas)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Batch], None]


def _accepted(b: Batch) -> pl.DataFrame:
    assert b.checked is not None, "validate runs before this stage"
    return b.checked.ok


def standard_stages(
    limits: Limits,
    writer: ReadingsWriter,
    registry: Callable[[], Registry | None] = lambda: None,
) -> list[Stage]:
    """The processor's stages. ``registry`` gives the current registry frames (None: every
    sensor and metric is accepted, as in tools and tests without a registry)."""

    def _decode(b: Batch) -> None:
        b.decoded = decode(b.values)

    def _validate(b: Batch) -> None:
        assert b.decoded is not None
        b.checked = check(b.decoded.readings, b.now_ms, limits, registry())

    def _series(b: Batch) -> None:
        ok = _accepted(b)
        if ok.height:
            if "series_id" in ok.columns:  # came with the registry join (with_series)
                sid = ok["series_id"]
            else:
                sid = writer.series.lookup(ok.select("sensor", "metric"))["series_id"]
            b.series_id = None if sid.null_count() else sid

    def _dedupe(b: Batch) -> None:
        if b.series_id is not None:
            ok = _accepted(b)
            b.rows = sort_unique(
                b.series_id.to_numpy(), ok["ts_us"].to_numpy(), ok["value"].to_numpy()
            )

    def _rollups(b: Batch) -> None:
        if b.rows is not None:
            b.deltas = deltas(b.rows)

    def _encode(b: Batch) -> None:
        if b.rows is not None:
            b.copy = readings_rows(b.rows.series_id, b.rows.ts_us, b.rows.value)

    return [
        Stage("decode", _decode),
        Stage("validate", _validate),
        Stage("series", _series),
        Stage("dedupe", _dedupe),
        Stage("rollups", _rollups),
        Stage("encode", _encode),
    ]


def with_series(registry: Registry, writer: ReadingsWriter) -> Registry:
    """``registry`` whose pairs carry the writer's series ids (null for a series not created
    yet): the validation's registry join then finds the ids too. Rebuild it when the
    registry or ``writer.series.version`` changes."""
    return registry.with_pair_columns(writer.series.frame)


def run(stages: list[Stage], batch: Batch, seconds: dict[str, float] | None = None) -> Batch:
    """Run ``stages`` in order on ``batch``; add each stage's CPU seconds to ``seconds``."""
    for stage in stages:
        t = time.process_time()
        stage.run(batch)
        if seconds is not None:
            seconds[stage.name] = seconds.get(stage.name, 0.0) + time.process_time() - t
    return batch

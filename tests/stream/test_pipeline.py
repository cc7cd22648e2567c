"""The pure stages of the processor on a small batch: series ids from the registry join or the
cache, rows, deltas and COPY tuples; a series the cache does not know leaves them to the sink."""

from __future__ import annotations

import polars as pl

from meetnet.wire import encode_record
from store.readings import ReadingsWriter
from stream.pipeline import Batch, run, standard_stages, with_series
from stream.validate import Limits, Registry

NOW_MS = 1_795_978_800_000
LIMITS = Limits(86_400_000, 600_000)


def _values() -> list[bytes]:
    readings = [
        {"metric": m, "ts": NOW_MS - k * 1000, "value": float(k)}
        for k in range(3)
        for m in ("pm25", "no2")
    ]
    return [encode_record(s, NOW_MS, readings) for s in ("p-1", "p-2")]  # type: ignore[arg-type]


def _writer(known: list[tuple[str, str]]) -> ReadingsWriter:
    w = ReadingsWriter()
    w.series.frame = pl.DataFrame(
        {
            "sensor": [s for s, _ in known],
            "metric": [m for _, m in known],
            "series_id": list(range(10, 10 + len(known))),
        },
        schema={"sensor": pl.String, "metric": pl.String, "series_id": pl.Int32},
    )
    return w


def _registry() -> Registry:
    pairs = [(s, m) for s in ("p-1", "p-2") for m in ("pm25", "no2", "pm10")]
    return Registry.build(
        pl.DataFrame({"sensor": ["p-1", "p-2"]}),
        pl.DataFrame({"sensor": [s for s, _ in pairs], "metric": [m for _, m in pairs]}),
    )


ALL = [(s, m) for s in ("p-1", "p-2") for m in ("pm25", "no2")]


def test_series_ids_from_the_registry_join_equal_the_cache_lookup() -> None:
    w = _writer(ALL)
    joined = with_series(_registry(), w)
    via_registry = run(standard_stages(LIMITS, w, lambda: joined), Batch(_values(), NOW_MS))
    via_cache = run(standard_stages(LIMITS, w), Batch(_values(), NOW_MS))
    assert via_registry.checked is not None and "series_id" in via_registry.checked.ok.columns
    assert via_registry.series_id is not None and via_cache.series_id is not None
    assert via_registry.series_id.to_list() == via_cache.series_id.to_list()
    assert via_registry.prepared is not None
    assert len(via_registry.prepared.rows) == 12
    assert via_registry.prepared.deltas.frame().equals(via_cache.prepared.deltas.frame())  # type: ignore[union-attr]


def test_a_series_unknown_to_the_cache_leaves_the_rows_to_the_sink() -> None:
    w = _writer(ALL[:3])
    joined = with_series(_registry(), w)
    b = run(standard_stages(LIMITS, w, lambda: joined), Batch(_values(), NOW_MS))
    assert b.checked is not None and b.checked.ok.height == 12
    assert b.series_id is None and b.prepared is None


def test_stage_seconds_are_recorded_per_stage() -> None:
    seconds: dict[str, float] = {}
    run(standard_stages(LIMITS, _writer(ALL)), Batch(_values(), NOW_MS), seconds)
    assert list(seconds) == ["decode", "validate", "series", "dedupe", "rollups", "encode"]

"""Vectorized validation of decoded readings: accepted rows and rejects with a reason."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from meetnet.wire import Reason
from stream.decode import READINGS_SCHEMA
from stream.validate import Checked, Limits, Registry, check, parse_ts_us, registry_misses

NOW_MS = 1_795_978_800_000  # 2026-11-29T19:00:00Z
NOW_US = NOW_MS * 1000
LIMITS = Limits(max_age_ms=7 * 86_400_000, max_skew_ms=300_000)
OLDEST_MS = NOW_MS - LIMITS.max_age_ms
NEWEST_MS = NOW_MS + LIMITS.max_skew_ms

OK_COLUMNS = ["rec", "sensor", "metric", "ts_us", "value", "rx"]
REJECT_COLUMNS = ["rec", "rx", "sensor", "metric", "ts", "value", "reason", "detail"]


def frame(rows: list[tuple]) -> pl.DataFrame:
    """Rows of (sensor, metric, ts, value); rec is the row number, rx is 1."""
    return pl.DataFrame(
        [(i, s, 1, m, t, v) for i, (s, m, t, v) in enumerate(rows)],
        schema=READINGS_SCHEMA,
        orient="row",
    )


def one(ts: str, value: float = 1.0, sensor: str = "s-1", metric: str = "pm25") -> Checked:
    return check(frame([(sensor, metric, ts, value)]), NOW_MS, LIMITS)


def reason_of(ts: str, value: float = 1.0, sensor: str = "s-1", metric: str = "pm25") -> str:
    out = one(ts, value, sensor, metric)
    assert out.ok.height == 0, "expected a reject"
    return out.rejects["reason"].item()


def parse(values: list[str | None]) -> list[int | None]:
    return pl.select(parse_ts_us(pl.Series("ts", values, dtype=pl.String))).to_series().to_list()


# --- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [
        "1795978800000",
        "2026-11-29T19:00:00Z",
        "2026-11-29t19:00:00z",
        "2026-11-29 19:00:00Z",
        "2026-11-29T19:00:00+00:00",
        "2026-11-29T19:00:00-00:00",
        "2026-11-29T20:00:00+01:00",
        "2026-11-29T14:00:00-05:00",
        "2026-11-30T04:30:00+09:30",
        "2026-11-29T19:00:00.0Z",
        "2026-11-29T19:00:00.000000000Z",
    ],
)
def test_timestamp_forms_of_one_instant_parse_to_the_same_microseconds(ts: str) -> None:
    assert parse([ts]) == [NOW_US]


@pytest.mark.parametrize(
    ("fraction", "us"),
    [
        ("5", 500_000),
        ("12", 120_000),
        ("123", 123_000),
        ("1234", 123_400),
        ("12345", 123_450),
        ("123456", 123_456),
        ("1234567", 123_456),
        ("12345678", 123_456),
        ("123456789", 123_456),
    ],
)
def test_one_to_nine_fraction_digits_parse_to_microseconds(fraction: str, us: int) -> None:
    assert parse([f"2026-11-29T19:00:00.{fraction}Z"]) == [NOW_US + us]


def test_epoch_ms_and_rfc3339_with_milliseconds_agree() -> None:
    assert parse(["1082228670370", "2004-04-17T19:04:30.370Z"]) == [1082228670370000] * 2


def test_epoch_zero_parses() -> None:
    assert parse(["0", "1970-01-01T00:00:00Z"]) == [0, 0]


@pytest.mark.parametrize(
    "ts",
    [
        pytest.param("2026-02-30T00:00:00Z", id="feb-30"),
        pytest.param("2025-02-29T00:00:00Z", id="feb-29-non-leap"),
        pytest.param("2026-13-01T00:00:00Z", id="month-13"),
        pytest.param("2026-11-29T24:00:00Z", id="hour-24"),
        pytest.param("2026-11-29T19:00:00", id="naive"),
        pytest.param("2026-11-29T19:00:00+01:00x", id="trailing-junk"),
        pytest.param("garbage", id="garbage"),
        pytest.param("", id="empty"),
        pytest.param("-5", id="negative-epoch"),
        pytest.param("1234567890123456", id="16-digit-epoch"),
    ],
)
def test_unparseable_timestamp_parses_to_null(ts: str) -> None:
    assert parse([ts]) == [None]


def test_calendar_impossible_date_is_rejected_as_invalid_timestamp() -> None:
    assert reason_of("2026-02-30T00:00:00Z") == Reason.INVALID_TIMESTAMP


def test_missing_timestamp_is_rejected_as_invalid_timestamp() -> None:
    out = check(frame([("s-1", "pm25", None, 1.0)]), NOW_MS, LIMITS)
    assert out.rejects["reason"].to_list() == [Reason.INVALID_TIMESTAMP]


# --- event-time window -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts_ms",
    [
        pytest.param(OLDEST_MS, id="exactly-max-age"),
        pytest.param(NOW_MS, id="now"),
        pytest.param(NEWEST_MS, id="exactly-max-skew"),
    ],
)
def test_timestamp_on_the_window_edge_is_accepted(ts_ms: int) -> None:
    out = one(str(ts_ms))
    assert out.rejects.height == 0
    assert out.ok["ts_us"].to_list() == [ts_ms * 1000]


@pytest.mark.parametrize(
    "ts_ms",
    [
        pytest.param(OLDEST_MS - 1, id="1ms-older-than-max-age"),
        pytest.param(NEWEST_MS + 1, id="1ms-beyond-max-skew"),
        pytest.param(0, id="epoch-zero"),
    ],
)
def test_timestamp_outside_the_window_is_rejected_as_timestamp_out_of_range(ts_ms: int) -> None:
    assert reason_of(str(ts_ms)) == Reason.TIMESTAMP_OUT_OF_RANGE


def test_window_edges_apply_to_rfc3339_with_sub_millisecond_precision() -> None:
    # 2026-11-29T19:05:00Z is now + max_skew exactly; one microsecond later is out.
    assert one("2026-11-29T19:05:00.000000Z").ok.height == 1
    assert reason_of("2026-11-29T19:05:00.000001Z") == Reason.TIMESTAMP_OUT_OF_RANGE
    assert reason_of("2026-11-29T20:05:00.000001+01:00") == Reason.TIMESTAMP_OUT_OF_RANGE


# --- values, metrics, sensors ----------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), None])
def test_missing_or_non_finite_value_is_rejected_as_non_finite_value(value: float | None) -> None:
    assert reason_of(str(NOW_MS), value=value) == Reason.NON_FINITE_VALUE  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0.0, -0.0, -1e308, 1.7976931348623157e308, 5e-324])
def test_finite_extreme_value_is_accepted(value: float) -> None:
    assert one(str(NOW_MS), value=value).ok["value"].to_list() == [value]


@pytest.mark.parametrize("metric", ["PM25", "25pm", "pm-25", "", None, "m" * 65])
def test_bad_metric_is_rejected_as_invalid_metric(metric: str | None) -> None:
    assert reason_of(str(NOW_MS), metric=metric) == Reason.INVALID_METRIC  # type: ignore[arg-type]


@pytest.mark.parametrize("sensor", ["S-1", "-s", "a/b", "a+", "#", "abc\n", "", None, "s" * 65])
def test_bad_sensor_is_rejected_as_invalid_sensor_id(sensor: str | None) -> None:
    assert reason_of(str(NOW_MS), sensor=sensor) == Reason.INVALID_SENSOR_ID  # type: ignore[arg-type]


def test_first_failing_check_decides_the_reason() -> None:
    # Bad sensor, bad metric, NaN and bad ts at once: the sensor is reported.
    out = check(frame([("S", "M", "x", float("nan"))]), NOW_MS, LIMITS)
    assert out.rejects["reason"].to_list() == [Reason.INVALID_SENSOR_ID]


# --- output ----------------------------------------------------------------------------------


def test_valid_rows_are_returned_with_utc_microseconds() -> None:
    out = check(
        frame(
            [
                ("s-1", "pm25", str(NOW_MS), 12.5),
                ("s-2", "pm10", "2026-11-29T20:00:00.25+01:00", -3.0),
            ]
        ),
        NOW_MS,
        LIMITS,
    )
    expected = pl.DataFrame(
        {
            "rec": pl.Series([0, 1], dtype=pl.UInt32),
            "sensor": ["s-1", "s-2"],
            "metric": ["pm25", "pm10"],
            "ts_us": [NOW_US, NOW_US + 250_000],
            "value": [12.5, -3.0],
            "rx": [1, 1],
        }
    )
    assert_frame_equal(out.ok, expected)
    assert out.rejects.columns == REJECT_COLUMNS
    assert out.rejects.height == 0


def test_rejects_keep_the_original_timestamp_text() -> None:
    out = one("2026-02-30T00:00:00Z", value=4.0)
    expected = pl.DataFrame(
        {
            "rec": pl.Series([0], dtype=pl.UInt32),
            "rx": [1],  # the gateway's receive time travels with the reject
            "sensor": ["s-1"],
            "metric": ["pm25"],
            "ts": ["2026-02-30T00:00:00Z"],
            "value": [4.0],
            "reason": [Reason.INVALID_TIMESTAMP.value],
            "detail": ["ts is not a valid date-time (calendar or format)"],
        }
    )
    assert_frame_equal(out.rejects, expected)
    assert out.ok.columns == OK_COLUMNS


@pytest.mark.parametrize(
    ("row", "words"),
    [
        (("S", "pm25", str(NOW_MS), 1.0), "sensor id"),
        (("s", "PM", str(NOW_MS), 1.0), "metric must match"),
        (("s", "pm25", str(NOW_MS), float("nan")), "finite number"),
        (("s", "pm25", "2026-02-30T00:00:00Z", 1.0), "not a valid date-time"),
        (("s", "pm25", "0", 1.0), "ts outside the accepted window [now - 604800 s, now + 300 s]"),
    ],
)
def test_detail_is_human_readable(row: tuple, words: str) -> None:
    reject = check(frame([row]), NOW_MS, LIMITS).rejects.row(0, named=True)
    assert words in reject["detail"]
    assert reject["detail"] != reject["reason"]


def test_ok_and_rejects_partition_the_input() -> None:
    rows = [
        ("s-1", "pm25", str(NOW_MS), 1.0),
        ("S-1", "pm25", str(NOW_MS), 1.0),
        ("s-1", "pm25", "2026-11-29T19:00:00Z", 2.0),
        ("s-1", "PM", str(NOW_MS), 1.0),
        ("s-1", "pm25", str(NOW_MS), float("inf")),
        ("s-1", "pm25", "2026-02-30T00:00:00Z", 1.0),
        ("s-1", "pm25", str(OLDEST_MS - 1), 1.0),
        ("s-1", "pm25", str(NEWEST_MS), 3.0),
        ("s-2", "no2", "2026-11-29 19:00:00z", 4.0),
    ]
    out = check(frame(rows), NOW_MS, LIMITS)
    ok = out.ok["rec"].to_list()
    rejected = out.rejects["rec"].to_list()
    assert ok == [0, 2, 7, 8]
    assert rejected == [1, 3, 4, 5, 6]
    assert sorted(ok + rejected) == list(range(len(rows)))
    assert out.rejects["reason"].to_list() == [
        Reason.INVALID_SENSOR_ID,
        Reason.INVALID_METRIC,
        Reason.NON_FINITE_VALUE,
        Reason.INVALID_TIMESTAMP,
        Reason.TIMESTAMP_OUT_OF_RANGE,
    ]


def test_empty_frame_gives_empty_ok_and_rejects() -> None:
    out = check(pl.DataFrame(schema=READINGS_SCHEMA), NOW_MS, LIMITS)
    assert (out.ok.height, out.rejects.height) == (0, 0)
    assert out.ok.columns == OK_COLUMNS
    assert out.rejects.columns == REJECT_COLUMNS


# --- the registry: unknown sensors and metrics -----------------------------------------------

REGISTRY = Registry.build(
    pl.DataFrame({"sensor": ["s-1", "s-2", "s-empty"]}),
    pl.DataFrame({"sensor": ["s-1", "s-1", "s-2"], "metric": ["pm25", "no2", "pm25"]}),
)


def test_metrics_outside_the_sensor_s_type_and_unregistered_sensors_are_rejected() -> None:
    ts = str(NOW_MS)
    rows = [
        ("s-1", "pm25", ts, 1.0),
        ("s-1", "co2", ts, 2.0),  # s-1 has no co2
        ("s-2", "no2", ts, 3.0),  # the no2 of s-1 is not the no2 of s-2
        ("ghost", "pm25", ts, 4.0),
        ("s-empty", "pm25", ts, 5.0),  # registered, its type has no metrics
        ("s-2", "pm25", ts, 6.0),
        ("s-1", "no2", "1", 7.0),  # wrong twice: the registry reason wins over the window
    ]
    out = check(frame(rows), NOW_MS, LIMITS, REGISTRY)
    assert out.ok["value"].to_list() == [1.0, 6.0]
    assert out.ok.columns == OK_COLUMNS and out.rejects.columns == REJECT_COLUMNS
    got = dict(zip(out.rejects["value"].to_list(), out.rejects["reason"].to_list(), strict=True))
    assert got == {
        2.0: Reason.UNKNOWN_METRIC.value,
        3.0: Reason.UNKNOWN_METRIC.value,
        4.0: Reason.UNKNOWN_SENSOR.value,
        5.0: Reason.UNKNOWN_METRIC.value,
        7.0: Reason.TIMESTAMP_OUT_OF_RANGE.value,
    }
    assert out.rejects["rec"].to_list() == [1, 2, 3, 4, 6]  # batch order kept
    assert all(out.rejects["detail"].to_list())
    assert registry_misses(out) == ["ghost", "s-1", "s-2", "s-empty"]


def test_without_a_registry_nothing_is_checked_against_it_and_order_is_kept() -> None:
    rows = [(f"s-{i}", "anything", str(NOW_MS), float(i)) for i in range(50)]
    with_registry = check(frame(rows), NOW_MS, LIMITS, REGISTRY)
    without = check(frame(rows), NOW_MS, LIMITS)
    assert without.ok["value"].to_list() == [float(i) for i in range(50)]
    assert registry_misses(without) == []
    assert with_registry.ok.height == 0
    assert with_registry.rejects["rec"].to_list() == list(range(50))


def test_a_registry_with_duplicate_rows_does_not_duplicate_readings() -> None:
    dup = Registry.build(
        pl.DataFrame({"sensor": ["s-1", "s-1"]}),
        pl.DataFrame({"sensor": ["s-1", "s-1"], "metric": ["pm25", "pm25"]}),
    )
    out = check(frame([("s-1", "pm25", str(NOW_MS), 1.0)]), NOW_MS, LIMITS, dup)
    assert out.ok.height == 1

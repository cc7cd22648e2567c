"""``meetnet detect``: the detector over one CSV series, and its error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from meetnet.cli import app
from stream.detect import DetectionConfig
from stream.detect.offline import InputError, read_csv, score_frame
from tests.stream.detect.support import minutes, noisy


def series_csv(path: Path, ts: list[str] | np.ndarray, values: np.ndarray) -> Path:
    pl.DataFrame({"timestamp": [str(t) for t in ts], "value": values}).write_csv(path)
    return path


def rfc3339(us: np.ndarray) -> list[str]:
    return pl.Series(us).cast(pl.Datetime("us", "UTC")).dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_list()


def test_scores_keep_the_input_rows_in_order_and_mark_the_anomalies(tmp_path: Path) -> None:
    x = noisy(500, seed=1)
    x[200] += 15.0  # spike
    x[300:340] = x[299]  # flat line
    x[400] = 5000.0  # out of range for pm25
    ts = rfc3339(minutes(500))
    order = np.random.default_rng(0).permutation(500)  # rows in any order
    path = series_csv(tmp_path / "s.csv", [ts[i] for i in order], x[order])
    out = score_frame(read_csv(path), metric="pm25", config=DetectionConfig())
    rows = out.rows
    assert rows.columns == ["timestamp", "value", "anomaly_score", "is_anomaly", "anomaly_kind"]
    assert rows["timestamp"].to_list() == [ts[i] for i in order]
    by_time = rows.with_columns(i=pl.Series(order)).sort("i")
    kinds = by_time["anomaly_kind"].to_list()
    assert kinds[200] == "spike" and kinds[400] == "range"
    assert set(kinds[299:340]) == {"flatline"} and kinds[340] is None
    assert by_time["is_anomaly"].sum() == 1 + 41 + 1
    score, flag = rows["anomaly_score"].to_numpy(), rows["is_anomaly"].to_numpy()
    assert ((score >= 0.5) == (flag == 1)).all() and (score >= 0).all() and (score <= 1).all()


def test_epoch_seconds_and_milliseconds_and_gaps(tmp_path: Path) -> None:
    us = np.r_[minutes(100), minutes(100, 130)]  # 30 minutes without readings
    x = noisy(200)
    for name, ts in (("s", us / 1e6), ("ms", us // 1000)):
        out = score_frame(read_csv(series_csv(tmp_path / f"{name}.csv", ts, x)), metric="value",
                          config=DetectionConfig())  # fmt: skip
        assert out.interval_s == 60
        assert out.rows["anomaly_kind"].to_list()[100] == "silence"
        assert out.rows["is_anomaly"].sum() == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp,value\n", "has a header but no rows"),
        ("", "is empty"),
        ("time,value\n1,2\n", "no column 'timestamp'"),
        ("timestamp,v\n1,2\n", "no column 'value'"),
        ("timestamp,value\n2027-01-01T00:00:00Z,1\n2027-01-01T00:01:00,2\n",
         r"row 3: cannot parse timestamp '2027-01-01T00:01:00'.*needs an offset"),
        ("timestamp,value\n2027-01-01T00:00:00Z,1\nyesterday,2\n", "row 3: cannot parse"),
        ("timestamp,value\n1,1\n2,abc\n", "row 3: value 'abc' is not a number"),
    ],
)  # fmt: skip
def test_bad_files_get_an_error_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        score_frame(read_csv(path), metric="value", config=DetectionConfig())


def test_missing_values_and_repeated_timestamps_score_zero(tmp_path: Path) -> None:
    ts = rfc3339(minutes(300))
    x = noisy(300).astype(object)
    x[50] = None
    path = tmp_path / "m.csv"
    pl.DataFrame({"timestamp": [*ts, ts[10]], "value": [*x, 99.0]}).write_csv(path)
    rows = score_frame(read_csv(path), metric="value", config=DetectionConfig()).rows
    assert rows["anomaly_score"][50] == 0 and rows["anomaly_score"][300] == 0
    assert rows["is_anomaly"].sum() == 0


def test_the_command_writes_scores_and_flags_and_reports_errors(tmp_path: Path) -> None:
    x = noisy(300)
    x[150] = -5.0
    src = series_csv(tmp_path / "in.csv", rfc3339(minutes(300)), x)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[range]\nmin = 10\n")
    runner = CliRunner()
    res = runner.invoke(app, ["detect", "-i", str(src), "-o", str(tmp_path / "out.csv"),
                              "--metric", "pm25", "--config", str(cfg),
                              "--flags", str(tmp_path / "f.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "300 rows, 1 anomalous; flags: range 1" in res.output
    assert pl.read_csv(tmp_path / "out.csv")["is_anomaly"].sum() == 1
    assert '"kind": "range"' in (tmp_path / "f.json").read_text()
    bad = runner.invoke(app, ["detect", "-i", str(tmp_path / "nope.csv"), "-o", "x.csv"])
    assert bad.exit_code == 2 and "error:" in bad.output and "no such file" in bad.output
    cfg.write_text("[range]\nmni = 10\n")
    bad = runner.invoke(app, ["detect", "-i", str(src), "-o", "x.csv", "--config", str(cfg)])
    assert bad.exit_code == 2 and "range.mni" in bad.output

"""Thresholds: the sensor_types.detection schema, precedence and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.detect import ConfigError, Structural, load_config_file, parse_detection


def test_empty_documents_mean_the_defaults() -> None:
    for doc in (None, "", "{}", {}):
        rules = parse_detection(doc).rules_for("value")
        assert rules.spike.z == 6.0 and rules.flatline.min_readings == 20
        assert rules.range.min is None and rules.silence.factor == 3.0


def test_metric_kind_defaults_then_type_then_metric_overrides() -> None:
    cfg = parse_detection(
        {"min_scale": 1.0, "spike": {"z": 7}, "metrics": {"humidity": {"spike": {"z": 9}}}}
    )
    assert parse_detection({}).rules_for("humidity").flatline.min_readings == 120  # kind default
    hum, pm = cfg.rules_for("humidity"), cfg.rules_for("pm25")
    assert (hum.spike.z, hum.min_scale, hum.flatline.min_readings) == (9, 1.0, 120)
    assert (pm.spike.z, pm.min_scale) == (7, 1.0)  # the type's min_scale beats pm25's 0.5
    assert parse_detection({}).rules_for("pm25").min_scale == 0.5


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"spike": {"zz": 5}}, r"spike.zz: Extra inputs are not permitted"),
        ({"spikes": {}}, r"spikes: Extra inputs"),
        ({"spike": {"z": -1}}, r"spike.z: Input should be greater than 0"),
        ({"noise": {"ratio": "high"}}, r"noise.ratio"),
        ({"metrics": {"pm25": {"flatline": {"min_readings": 1}}}}, r"metrics.pm25: flatline"),
        ("{not json", r"not valid JSON"),
        ("[1, 2]", r"must be a JSON object"),
    ],
)
def test_a_bad_document_says_which_key_is_wrong(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_detection(doc)  # type: ignore[arg-type]


def test_config_files_in_json_and_toml(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text("[spike]\nz = 8.5\n[metrics.temperature]\nmin_scale = 0.1\n")
    (tmp_path / "t.json").write_text('{"spike": {"z": 8.5}}')
    (tmp_path / "bad.toml").write_text("[spike\n")
    assert load_config_file(tmp_path / "t.toml").rules_for("temperature").min_scale == 0.1
    assert load_config_file(tmp_path / "t.json").rules_for("x").spike.z == 8.5
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "missing.json")


def test_the_config_version_changes_with_any_threshold_and_only_then() -> None:
    s = Structural()
    a = parse_detection({}).rules_for("pm25").version(s)
    assert a == parse_detection("{}").rules_for("pm25").version(s)
    assert a != parse_detection({"spike": {"z": 6.5}}).rules_for("pm25").version(s)
    assert a != parse_detection({}).rules_for("pm25").version(Structural(noise_blocks=8))


def test_structural_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        Structural(block=6)
    with pytest.raises(ConfigError, match="watermark_quantile"):
        Structural(watermark_quantile=0)

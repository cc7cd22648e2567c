"""Mosquitto's password and ACL files as rendered from the registry (pure; no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from ingest.broker_auth import (
    Account,
    _write_if_changed,
    client_credentials,
    local_password_path,
    render,
    service_password,
)
from meetnet.secrets import mosquitto_hash
from meetnet.settings import Settings

H = mosquitto_hash("x", salt=b"0123456789ab")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_each_account_gets_its_hash_and_exactly_its_own_topic() -> None:
    pw, acl = render(
        [
            Account("meetnet.ingest", H, "ingest"),
            Account("gent-air-001", H, "sensor"),
            Account("gent-gw-01", H, "gateway"),
        ],
        "meetnet/v1",
    )
    assert _lines(pw) == [f"meetnet.ingest:{H}", f"gent-air-001:{H}", f"gent-gw-01:{H}"]
    assert _lines(acl) == [
        "user meetnet.ingest",
        "topic read meetnet/v1/#",
        "user gent-air-001",
        "topic write meetnet/v1/sensors/gent-air-001",
        "user gent-gw-01",
        "topic write meetnet/v1/gateways/gent-gw-01",
    ]


@pytest.mark.parametrize(
    "name",
    [
        "evil\ntopic readwrite #",  # a newline would start a rule of its own
        "a+b",
        "a#",
        "a/b",
        "with space",
        "Upper",
        "",
        "-leading",
        "a" * 65,
        "x:y",
        "%u",
    ],
)
def test_a_username_that_cannot_be_written_safely_is_left_out(name: str) -> None:
    pw, acl = render([Account(name, H, "sensor"), Account("fine-1", H, "sensor")], "p/v1")
    assert _lines(pw) == [f"fine-1:{H}"]
    assert _lines(acl) == ["user fine-1", "topic write p/v1/sensors/fine-1"]


@pytest.mark.parametrize(
    "bad_hash", ["", "plaintext", "$6$abc", f"{H}\nroot:{H}", f"{H}:x", f"{H} x"]
)
def test_a_malformed_hash_is_left_out(bad_hash: str) -> None:
    pw, acl = render([Account("dev-1", bad_hash, "sensor")], "p/v1")
    assert _lines(pw) == [] and _lines(acl) == []


def test_a_duplicate_username_is_written_once() -> None:
    pw, _ = render([Account("dev-1", H, "sensor"), Account("dev-1", H, "gateway")], "p/v1")
    assert _lines(pw) == [f"dev-1:{H}"]


@pytest.mark.parametrize(
    "prefix", ["a/+/b", "a/#", "with space", "a\nb", "", "/lead", "trail/", "a//b", "$SYS"]
)
def test_a_prefix_that_is_not_plain_topic_levels_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError):
        Settings(mqtt_topic_prefix=prefix)


def test_files_are_replaced_atomically_only_when_their_content_changes(tmp_path: Path) -> None:
    f = tmp_path / "acl"
    assert _write_if_changed(f, "one\n")
    inode = f.stat().st_ino
    assert not _write_if_changed(f, "one\n")
    assert f.stat().st_ino == inode
    assert _write_if_changed(f, "two\n")
    assert f.read_text() == "two\n" and f.stat().st_ino != inode
    assert f.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["acl"]  # no temp file left


def test_local_service_password_is_generated_once_with_private_permissions(
    tmp_path: Path,
) -> None:
    s = Settings(state_dir=tmp_path, mqtt_auth=True)
    assert client_credentials(s) is None  # nothing generated yet: anonymous
    pw = service_password(s, create=True)
    assert pw and service_password(s, create=True) == pw
    path = local_password_path(s)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert client_credentials(s) == ("meetnet.ingest", pw)
    # A configured password wins; without auth and without one, anonymous.
    s2 = Settings(state_dir=tmp_path, mqtt_password=SecretStr("given"), mqtt_username="svc")
    assert client_credentials(s2) == ("svc", "given")
    assert client_credentials(Settings(state_dir=tmp_path, mqtt_auth=False)) is None
    assert "given" not in repr(s2) and "given" not in str(s2.model_dump())

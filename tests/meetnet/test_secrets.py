"""Key and password hashing: formats, round trips, and Mosquitto's own tool as the oracle."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meetnet import secrets


def test_api_key_has_its_id_and_verifies_only_itself() -> None:
    key_id, key = secrets.new_api_key()
    assert key.startswith(f"mnk_{key_id}_")
    stored = secrets.api_key_hash(key)
    assert len(stored) == 32
    assert secrets.api_key_matches(key, stored)
    other_id, other = secrets.new_api_key()
    assert other_id != key_id
    assert not secrets.api_key_matches(other, stored)
    assert not secrets.api_key_matches(key[:-1] + ("A" if key[-1] != "A" else "B"), stored)


@pytest.mark.parametrize(
    "token", ["", "mnk_", "Bearer x", "mnk_ABCDEFGH_" + "a" * 43, "mnk_abcdefgh_" + "a" * 42]
)
def test_malformed_api_keys_are_rejected_not_raised(token: str) -> None:
    assert secrets.parse_api_key(token) is None
    assert not secrets.api_key_matches(token, b"\0" * 32)
    with pytest.raises(ValueError):
        secrets.api_key_hash(token)


def test_mosquitto_hash_round_trip_and_format() -> None:
    h = secrets.mosquitto_hash("s3cret")
    assert h.startswith("$7$101$")
    assert secrets.mosquitto_verify("s3cret", h)
    assert not secrets.mosquitto_verify("s3cret!", h)
    assert not secrets.mosquitto_verify("s3cret", "$6$abc$def")
    assert secrets.mosquitto_hash("x") != secrets.mosquitto_hash("x")  # salted


def test_hash_of_mosquitto_passwd_verifies_here(tmp_path: Path) -> None:
    # mosquitto_passwd ships with Debian's mosquitto package, which `make setup` installs.
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "dev", "p4ss"], check=True)
    stored = pw.read_text().strip().split(":", 1)[1]
    assert secrets.mosquitto_verify("p4ss", stored)
    assert not secrets.mosquitto_verify("p4ss ", stored)

"""`meetnet admin create-key / revoke-key / list-keys` against the test database."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from typer.testing import CliRunner

from meetnet.cli import app
from meetnet.secrets import api_key_matches
from meetnet.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(
    migrated_db: str, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CliRunner]:
    monkeypatch.setenv("MEETNET_DATABASE_URL", migrated_db)
    monkeypatch.setenv("MEETNET_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    db.execute("INSERT INTO municipalities (nis_code, name) VALUES ('44021', 'Gent')")
    yield CliRunner()
    get_settings.cache_clear()


def test_create_key_prints_a_key_that_is_stored_only_as_a_hash(
    cli: CliRunner, db: psycopg.Connection
) -> None:
    res = cli.invoke(
        app, ["admin", "create-key", "--role", "municipality", "--municipality", "44021", "--json"]
    )
    assert res.exit_code == 0, res.output
    key = json.loads(res.stdout)["key"]
    key_id = key.split("_")[1]
    row = db.execute(
        "SELECT role, municipality, secret_hash FROM api_keys WHERE key_id = %s", (key_id,)
    ).fetchone()
    assert row is not None and row[:2] == ("municipality", "44021")
    assert api_key_matches(key, bytes(row[2]))
    res = cli.invoke(app, ["admin", "create-key", "--role", "admin", "--name", "ops"])
    assert res.exit_code == 0 and "shown only now" in res.stdout
    listed = cli.invoke(app, ["admin", "list-keys"]).stdout
    assert key_id in listed and key.split("_", 2)[2] not in listed
    res = cli.invoke(app, ["admin", "revoke-key", key])  # the whole key pasted: its id is used
    assert res.exit_code == 0 and f"revoked key {key_id}" in res.stdout
    assert key.split("_", 2)[2] not in res.output
    assert key_id not in cli.invoke(app, ["admin", "list-keys"]).stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--role", "municipality"], "needs --municipality"),
        (["--role", "municipality", "--municipality", "99999"], "unknown NIS code '99999'"),
        (["--role", "municipality", "--municipality", "Gent"], "not a NIS code"),
        (["--role", "reader", "--municipality", "44021"], "leave out --municipality"),
    ],
)
def test_create_key_refuses_bad_arguments_clearly(
    cli: CliRunner, args: list[str], says: str
) -> None:
    res = cli.invoke(app, ["admin", "create-key", *args])
    assert res.exit_code == 2
    assert says in res.stderr


def test_revoke_key_of_an_unknown_id_fails(cli: CliRunner) -> None:
    res = cli.invoke(app, ["admin", "revoke-key", "abcdef123456"])
    assert res.exit_code == 2 and "unknown API key 'abcdef123456'" in res.stderr

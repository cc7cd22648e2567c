"""Versioned schema migrations: ``store/migrations/NNNN_name.sql``, applied in order, once.

Each file runs in its own transaction together with its row in ``meetnet_schema_migrations``,
under a session advisory lock so several processes starting at once cannot apply one twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

log = logging.getLogger(__name__)
_LOCK_KEY = 0x6D656574  # "meet"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    out = []
    for entry in resources.files("store").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in store/migrations: {versions}")
    return out


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply pending migrations; return those applied. ``conn`` must be in autocommit mode.

    A session-level advisory lock serialises concurrent callers; each migration commits on its
    own, so a failing one leaves the earlier ones applied and is retried on the next run.
    """
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection")
    applied_now: list[Migration] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS meetnet_schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r[0] for r in conn.execute("SELECT version FROM meetnet_schema_migrations")}
        for m in available():
            if m.version in done:
                continue
            log.info("applying migration", extra={"version": m.version, "migration": m.name})
            with conn.transaction():
                conn.execute(m.sql.encode())
                conn.execute(
                    "INSERT INTO meetnet_schema_migrations (version, name) VALUES (%s, %s)",
                    (m.version, m.name),
                )
            applied_now.append(m)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def current_version(conn: psycopg.Connection) -> int | None:
    row = conn.execute("SELECT to_regclass('meetnet_schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    v = conn.execute("SELECT max(version) FROM meetnet_schema_migrations").fetchone()
    return v[0] if v else None

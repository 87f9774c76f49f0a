"""Schema migrations (Alembic), applied when a store opens.

A new database gets the whole schema; an older one the revisions it lacks; one created before
migrations existed (by ``create_all``, which wrote the first revision's tables) is adopted at that
revision. Several processes may open the same database at once (the gateway, the CLI, replicas),
so whoever migrates holds a lock: a file lock for SQLite, an advisory lock on PostgreSQL and
MySQL/MariaDB.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, TextClause, inspect, text

SCRIPTS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the tables create_all made before migrations existed
_LOCK_NAME = "tokenabacus_migrate"
_LOCK_KEY = 0x746F6B61  # "toka": PostgreSQL advisory locks take a number


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None
    return rev


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> bool:
    """Bring the schema to the newest revision; True if anything was applied."""
    target = head()
    if current(engine) == target:
        return False
    with _lock(engine), engine.begin() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
        if rev == target:  # another process migrated while we waited
            return False
        cfg = _config(conn)
        if rev is None and inspect(conn).has_table("usage_records"):
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")
    return True


@contextlib.contextmanager
def _lock(engine: Engine) -> Iterator[None]:
    name = engine.dialect.name
    if name == "sqlite":
        db = engine.url.database
        if not db or db == ":memory:":
            yield
            return
        with open(f"{db}.migrate-lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    with engine.connect() as conn:  # a session lock, held on its own connection
        if name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            release: tuple[TextClause, dict[str, object]] = text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY}
        else:
            if conn.execute(text("SELECT GET_LOCK(:n, 120)"), {"n": _LOCK_NAME}).scalar() != 1:
                raise RuntimeError("another process held the schema migration lock for 120 s")
            release = text("SELECT RELEASE_LOCK(:n)"), {"n": _LOCK_NAME}
        try:
            yield
        finally:
            conn.execute(*release)
            conn.commit()

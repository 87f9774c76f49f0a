"""The ledger database: batched idempotent inserts and the reads the CLI needs.

All methods are synchronous; the gateway calls them from worker threads only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, func, make_url, select, text
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tokenabacus.ledger.migrate import upgrade
from tokenabacus.ledger.record import FIELDS
from tokenabacus.ledger.schema import api_keys, meta, usage_records


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


_LENGTHS = {c.name: c.type.length for c in usage_records.columns if getattr(c.type, "length", None)}


# (position in FIELDS, column length) of the length-limited columns.
_LIMITS = [(i, _LENGTHS[f]) for i, f in enumerate(FIELDS) if f in _LENGTHS]


def _row(record: dict) -> list:
    """The record's values in FIELDS order, strings clipped to their column's length and rid of
    NUL characters, which PostgreSQL refuses in text (a client can put one in a model name)."""
    row = [record.get(f) for f in FIELDS]
    for i, n in _LIMITS:
        v = row[i]
        if type(v) is str:
            if len(v) > n:
                v = v[:n]
            if "\x00" in v:
                v = v.replace("\x00", "\ufffd")
            row[i] = v
    return row


_SQLITE_INSERT = (
    "INSERT OR IGNORE INTO usage_records (" + ", ".join(f'"{f}"' for f in FIELDS) + ") VALUES ("
    + ", ".join("?" for _ in FIELDS) + ")"
)


class LedgerMissing(Exception):
    """A read-only command found no ledger to read."""


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite ledger URL (None for other databases and in-memory SQLite)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


class Store:
    def __init__(self, url: str, create: bool = True) -> None:
        """Open the ledger and bring its schema up to date. With ``create=False`` a SQLite
        ledger that does not exist is an error (LedgerMissing), and nothing is created."""
        self.url = url
        path = sqlite_path(url)
        if path is not None:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.is_file():
                raise LedgerMissing(f"no ledger at {path}")
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=make_url(url).get_backend_name() != "sqlite")
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            upgrade(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    # Usage records -----------------------------------------------------------------------
    def _insert_ignore(self):
        name = self.engine.dialect.name
        if name == "sqlite":
            return sqlite_insert(usage_records).on_conflict_do_nothing(index_elements=["request_id"])
        if name == "postgresql":
            return pg_insert(usage_records).on_conflict_do_nothing(index_elements=["request_id"])
        if name in ("mysql", "mariadb"):
            return mysql_insert(usage_records).prefix_with("IGNORE")
        raise ValueError(f"unsupported database: {name}")

    def insert_records(self, records: Iterable[dict]) -> int:
        """Insert records, ignoring request_ids already present (replays are harmless).
        Strings are clipped to their column so one odd value cannot wedge the writer on a
        database that enforces lengths (PostgreSQL, MySQL)."""
        if self.engine.dialect.name == "sqlite":
            return self._insert_sqlite(records)
        rows = [dict(zip(FIELDS, _row(r))) for r in records]
        if not rows:
            return 0
        with self.engine.begin() as conn:
            res = conn.execute(self._insert_ignore(), rows)
            return res.rowcount if res.rowcount is not None and res.rowcount >= 0 else len(rows)

    def _insert_sqlite(self, records: Iterable[dict]) -> int:
        # The writer's hottest loop: plain DB-API executemany skips SQLAlchemy's per-row
        # parameter processing, which cost more than SQLite itself.
        rows = [_row(r) for r in records]
        if not rows:
            return 0
        with self.engine.begin() as conn:
            cur = conn.connection.driver_connection.cursor()
            cur.executemany(_SQLITE_INSERT, rows)
            return cur.rowcount if cur.rowcount >= 0 else len(rows)

    def count_records(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(usage_records)).scalar_one()

    def latest_records(self, limit: int = 20, since_ms: int | None = None, **filters: str | None) -> list[dict]:
        q = select(*[usage_records.c[f] for f in FIELDS]).order_by(usage_records.c.timestamp.desc(), usage_records.c.id.desc())
        if since_ms is not None:
            q = q.where(usage_records.c.timestamp >= since_ms)
        for k, v in filters.items():
            if v is not None:
                q = q.where(usage_records.c[k] == v)
        q = q.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def all_request_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(usage_records.c.request_id))}

    # API keys ------------------------------------------------------------------------------
    def add_key(self, row: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(**row))
        self.touch_keys()

    def list_keys(self, include_revoked: bool = False) -> list[dict]:
        q = select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def revoke_key(self, key_id: str, at_ms: int) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at_ms)
            )
        if res.rowcount:
            self.touch_keys()
        return bool(res.rowcount)

    def active_keys(self) -> list[dict]:
        return self.list_keys(include_revoked=False)

    def touch_keys(self) -> None:
        """Bump the keys generation so running gateways reload their key cache."""
        with self.engine.begin() as conn:
            gen = int(self.get_meta("keys_generation", conn) or 0) + 1
            self.set_meta("keys_generation", str(gen), conn)

    def keys_generation(self) -> int:
        return int(self.get_meta("keys_generation") or 0)

    # Meta ----------------------------------------------------------------------------------
    def get_meta(self, key: str, conn=None) -> str | None:
        if conn is None:
            with self.engine.connect() as c:
                return self.get_meta(key, c)
        return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()

    def set_meta(self, key: str, value: str, conn=None) -> None:
        if conn is None:
            with self.engine.begin() as c:
                return self.set_meta(key, value, c)
        updated = conn.execute(meta.update().where(meta.c.key == key).values(value=value)).rowcount
        if not updated:
            conn.execute(meta.insert().values(key=key, value=value))

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

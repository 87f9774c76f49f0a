"""The ledger database: one SQLAlchemy engine, migrated when opened.

Every kind of row (usage records, keys, meta, and later quotas, prices, alerts, audit) has its own
access object built on a Database; none of them opens engines or runs migrations itself.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text

from tokenabacus.ledger.migrate import upgrade


class LedgerMissing(Exception):
    """A read-only command found no ledger to read."""


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite ledger URL (None for other databases and in-memory SQLite)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class Database:
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
        # SQLite connections are local files: a pre-ping would only cost a round trip.
        self.engine: Engine = create_engine(
            url, future=True, pool_pre_ping=make_url(url).get_backend_name() != "sqlite"
        )
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            upgrade(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def dialect(self) -> str:
        """sqlite, postgresql, mysql or mariadb: what the row modules branch on."""
        return self.engine.dialect.name

    def connect(self) -> Connection:
        """A connection for reads (``with db.connect() as conn``)."""
        return self.engine.connect()

    def begin(self) -> AbstractContextManager[Connection]:
        """A connection in a transaction, committed when the block ends without an error."""
        return self.engine.begin()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    def close(self) -> None:
        self.engine.dispose()

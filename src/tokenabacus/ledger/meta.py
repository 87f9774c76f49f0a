"""Meta: small named values kept in the ledger database (the admin key's hash, the keys
generation)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from tokenabacus.ledger.database import Database
from tokenabacus.ledger.schema import meta


class Meta:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str, conn: Connection | None = None) -> str | None:
        """``conn``: read inside a caller's transaction instead of on a connection of its own."""
        if conn is None:
            with self.db.connect() as c:
                return self.get(key, c)
        return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()

    def set(self, key: str, value: str, conn: Connection | None = None) -> None:
        """``conn``: write inside a caller's transaction (committed with it)."""
        if conn is None:
            with self.db.begin() as c:
                return self.set(key, value, c)
        # Update first, insert if there was nothing: the same statements on every database.
        updated = conn.execute(meta.update().where(meta.c.key == key).values(value=value)).rowcount
        if not updated:
            conn.execute(meta.insert().values(key=key, value=value))

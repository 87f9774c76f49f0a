"""A generation: a counter in the ledger's meta table that a kind of row bumps on every change,
so running gateways that cache those rows (keys, quotas, prices) know when to load them again
(ledger/reloader.py polls it). One mechanism for every cache that follows the database."""

from __future__ import annotations

from sqlalchemy import Connection

from tokenabacus.ledger.meta import Meta


class Generation:
    def __init__(self, meta: Meta, name: str) -> None:
        self.meta = meta
        self.name = name  # the meta entry

    def get(self) -> int:
        return int(self.meta.get(self.name) or 0)

    def touch(self, conn: Connection | None = None) -> None:
        """Bump it; ``conn``: inside the caller's transaction, so the change and the bump commit
        together (otherwise in a transaction of its own)."""
        if conn is None:
            with self.meta.db.begin() as c:
                return self.touch(c)
        gen = int(self.meta.get(self.name, conn) or 0) + 1
        self.meta.set(self.name, str(gen), conn)

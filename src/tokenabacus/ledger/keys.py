"""API key rows in the ledger database, and the keys generation that tells running gateways to
reload their key cache.

Rows hold the key's hash, never the key. All methods are synchronous (worker threads only).
"""

from __future__ import annotations

from sqlalchemy import select

from tokenabacus.ledger.database import Database
from tokenabacus.ledger.generation import Generation
from tokenabacus.ledger.meta import Meta
from tokenabacus.ledger.schema import api_keys

GENERATION = "keys_generation"  # the meta entry


class KeyStore:
    def __init__(self, db: Database, meta: Meta) -> None:
        self.db = db
        self.meta = meta
        self.changes = Generation(meta, GENERATION)

    def add(self, row: dict) -> None:
        with self.db.begin() as conn:
            conn.execute(api_keys.insert().values(**row))
        self.touch()

    def revoke(self, key_id: str, at_ms: int) -> bool:
        """False when there is no active key with that id."""
        with self.db.begin() as conn:
            res = conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at_ms)
            )
        if res.rowcount:
            self.touch()
        return bool(res.rowcount)

    def touch(self) -> None:
        """Bump the keys generation so running gateways reload their key cache."""
        self.changes.touch()

    def generation(self) -> int:
        return self.changes.get()

    def list(self, include_revoked: bool = False) -> list[dict]:
        """Every column, key_hash included (callers showing keys drop it), oldest first."""
        q = select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

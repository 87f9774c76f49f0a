"""API key rows in the ledger database, and the keys generation that tells running gateways to
reload their key cache.

Rows hold the key's hash, never the key. All methods are synchronous (worker threads only).
"""

from __future__ import annotations

from sqlalchemy import select

from tokenabacus.ledger import admin_events
from tokenabacus.ledger.admin_events import Actor
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

    def add(self, row: dict, actor: Actor | None = None) -> None:
        """Store a new key; with ``actor``, a ``key.create`` admin event in the same transaction
        (a key with an expiry or a budget; the event never holds the hash)."""
        with self.db.begin() as conn:
            conn.execute(api_keys.insert().values(**row))
            if actor is not None:
                admin_events.record(conn, actor, "key.create", row["key_id"], None, _shown(row))
        self.touch()

    def rotate(self, key_id: str, new_hash: str, prefix: str, previous_until: int, actor: Actor) -> dict | None:
        """Give a live key a new secret (its hash and prefix); the old hash stays valid until
        ``previous_until``. Same id, owner, history and quotas. None when no live key has that id."""
        c = api_keys.c
        with self.db.begin() as conn:
            row = conn.execute(select(api_keys).where(c.key_id == key_id, c.revoked_at.is_(None))).first()
            if row is None:
                return None
            before = dict(row._mapping)
            values = {"key_hash": new_hash, "prefix": prefix, "previous_hash": row.key_hash}
            values["previous_until"] = previous_until
            res = conn.execute(api_keys.update().where(c.key_id == key_id, c.key_hash == row.key_hash).values(**values))
            if not res.rowcount:  # rotated meanwhile by someone else
                return None
            after = {**before, **values}
            admin_events.record(conn, actor, "key.rotate", key_id, _shown(before), _shown(after))
        self.touch()
        return after

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


def _shown(row: dict) -> dict:
    """A key row for an admin event: never a secret's hash, old or new."""
    return {str(k): v for k, v in row.items() if k not in ("key_hash", "previous_hash")}

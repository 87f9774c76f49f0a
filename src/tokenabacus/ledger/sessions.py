"""Console session rows: a random token in an HttpOnly cookie, stored only as its hash, bound to the
key that signed in (by that key's hash, so revoking or rotating the key ends the session), with
a CSRF token for the requests that change something, and an absolute expiry."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from tokenabacus.calendar import now_ms
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.schema import console_sessions as t


@dataclass(frozen=True)
class Session:
    key_hash: str
    key_id: str
    csrf: str
    expires_at: int  # UTC ms


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    def __init__(self, db: Database, lifetime_s: int) -> None:
        self.db = db
        self.lifetime_ms = lifetime_s * 1000

    def open(self, key_hash: str, key_id: str) -> tuple[str, Session]:
        """A new session: the cookie's token (returned once) and the session. Expired sessions
        are cleared on the way, so the table holds only live ones."""
        token = secrets.token_urlsafe(32)
        at = now_ms()
        s = Session(key_hash, key_id, secrets.token_urlsafe(24), at + self.lifetime_ms)
        row = {"token_hash": _digest(token), "created_at": at, **s.__dict__}
        with self.db.begin() as conn:
            conn.execute(delete(t).where(t.c.expires_at <= at))
            conn.execute(insert(t).values(**row))
        return token, s

    def get(self, token: str) -> Session | None:
        """The live session of a cookie's token, or None (unknown, signed out or expired)."""
        if not token or len(token) > 200:
            return None
        with self.db.connect() as conn:
            r = conn.execute(select(t).where(t.c.token_hash == _digest(token))).first()
        if r is None or r.expires_at <= now_ms():
            return None
        return Session(r.key_hash, r.key_id, r.csrf, r.expires_at)

    def close(self, token: str) -> None:
        with self.db.begin() as conn:
            conn.execute(delete(t).where(t.c.token_hash == _digest(token)))

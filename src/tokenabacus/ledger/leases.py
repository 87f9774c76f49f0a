"""Named leases in the ledger database: one holder at a time across processes and replicas (the
alert evaluator and its senders, the report sender, in-process quota counters on a shared ledger)."""

from __future__ import annotations

from sqlalchemy import exc, insert, or_, select, update

from tokenabacus.calendar import now_ms
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.schema import leases


class Lease:
    """A named lease held by one holder until it expires; renewed by holding it again."""

    def __init__(self, db: Database, name: str, holder: str, ttl_s: float) -> None:
        self.db, self.name, self.holder, self.ttl_ms = db, name, holder, int(ttl_s * 1000)

    def acquire(self) -> bool:
        """Take or renew the lease; False while another live holder has it."""
        now = now_ms()
        l = leases.c  # noqa: E741
        with self.db.begin() as conn:
            got = conn.execute(
                update(leases)
                .where(l.name == self.name, or_(l.holder == self.holder, l.expires_at < now))
                .values(holder=self.holder, expires_at=now + self.ttl_ms)
            ).rowcount
            if got:
                return True
        try:
            with self.db.begin() as conn:
                conn.execute(insert(leases).values(name=self.name, holder=self.holder, expires_at=now + self.ttl_ms))
            return True
        except exc.IntegrityError:
            return False  # another holder has it (its row exists and has not expired)

    def release(self) -> None:
        with self.db.begin() as conn:
            conn.execute(
                update(leases).where(leases.c.name == self.name, leases.c.holder == self.holder).values(expires_at=0)
            )

    def holder_now(self) -> str | None:
        """Who holds the lease now (None when nobody does)."""
        with self.db.connect() as conn:
            row = conn.execute(
                select(leases.c.holder).where(leases.c.name == self.name, leases.c.expires_at >= now_ms())
            ).first()
        return row[0] if row else None

"""The alert history and leases in the ledger database.

``claim`` inserts an alert's row under its unique (rule, scope, period): only the process whose
insert succeeds sends it, so two evaluators (or a restart) never page twice. ``Lease`` keeps one
evaluator and one report sender across processes and replicas.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import and_, exc, func, insert, or_, select, update

from tokenabacus.ledger.database import Database
from tokenabacus.ledger.record import now_ms
from tokenabacus.ledger.schema import alert_events, leases


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


def claim(db: Database, row: dict[str, Any]) -> int | None:
    """Insert an alert; its id, or None when this (rule, scope, period) fired already."""
    try:
        with db.begin() as conn:
            res = conn.execute(insert(alert_events).values(**row, deliveries="{}"))
            return int(res.inserted_primary_key[0])  # type: ignore[index]
    except exc.IntegrityError:
        return None


def delivered(db: Database, alert_id: int, deliveries: dict[str, str]) -> None:
    with db.begin() as conn:
        conn.execute(
            update(alert_events)
            .where(alert_events.c.id == alert_id)
            .values(deliveries=json.dumps(deliveries, ensure_ascii=False))
        )


def last_fired(db: Database, rule: str, scope: str) -> int | None:
    a = alert_events.c
    with db.connect() as conn:
        return conn.execute(select(func.max(a.fired_at)).where(and_(a.rule == rule, a.scope == scope))).scalar()


def history(
    db: Database, since_ms: int | None = None, rule: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    a = alert_events.c
    q = select(alert_events).order_by(a.fired_at.desc(), a.id.desc()).limit(limit)
    if since_ms is not None:
        q = q.where(a.fired_at >= since_ms)
    if rule is not None:
        q = q.where(a.rule == rule)
    with db.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:
        r["deliveries"] = json.loads(r["deliveries"] or "{}")
    return rows

"""Quota rows and quota requests (approvals) in the ledger database, and the governance
generation that tells running gateways to reload them. Every change and decision appends an admin
event (ledger.admin_events) in its own transaction: who, when, from where, before and after.

All methods are synchronous (worker threads and the CLI only).
"""

from __future__ import annotations

import secrets

from sqlalchemy import select

from tokenabacus.ledger import admin_events
from tokenabacus.ledger.admin_events import Actor
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.generation import Generation
from tokenabacus.ledger.meta import Meta
from tokenabacus.ledger.record import now_ms
from tokenabacus.ledger.schema import quota_requests, quotas

GENERATION = "governance_generation"  # the meta entry
PENDING, APPROVED, DENIED = "pending", "approved", "denied"


class QuotaStore:
    def __init__(self, db: Database, meta: Meta) -> None:
        self.db = db
        self.meta = meta
        self.changes = Generation(meta, GENERATION)

    def generation(self) -> int:
        return self.changes.get()

    # Limits ------------------------------------------------------------------------------------
    def set(
        self,
        scope_kind: str,
        scope_value: str | None,
        model: str | None,
        metric: str,
        period: str,
        limit: int,
        by: str | None = None,
        actor: Actor | None = None,
    ) -> dict:
        """Create the limit, or change the number of the one with the same identity. ``by``
        names the actor on the row; ``actor`` (default: ``by`` alone) goes into the event."""
        c = quotas.c
        same = (
            (c.scope_kind == scope_kind)
            & (c.scope_value.is_(None) if scope_value is None else c.scope_value == scope_value)
            & (c.model.is_(None) if model is None else c.model == model)
            & (c.metric == metric)
            & (c.period == period)
        )
        with self.db.begin() as conn:
            row = conn.execute(select(quotas).where(same)).first()
            before = dict(row._mapping) if row is not None else None
            if row is not None:
                conn.execute(
                    quotas.update()
                    .where(c.quota_id == row.quota_id)
                    .values(limit_value=limit, updated_at=now_ms(), updated_by=by)
                )
                qid = row.quota_id
            else:
                qid = "q_" + secrets.token_hex(5)
                conn.execute(
                    quotas.insert().values(
                        quota_id=qid,
                        scope_kind=scope_kind,
                        scope_value=scope_value,
                        model=model,
                        metric=metric,
                        period=period,
                        limit_value=limit,
                        created_at=now_ms(),
                        created_by=by,
                    )
                )
            self.changes.touch(conn)
            after = dict(conn.execute(select(quotas).where(c.quota_id == qid)).one()._mapping)
            action = "quota.update" if before is not None else "quota.create"
            admin_events.record(conn, actor or Actor(None, by), action, qid, before, after)
            return after

    def delete(self, quota_id: str, actor: Actor | None = None) -> bool:
        """Delete a limit; False if there is none with that id (nothing is recorded then)."""
        with self.db.begin() as conn:
            row = conn.execute(select(quotas).where(quotas.c.quota_id == quota_id)).first()
            if row is None:
                return False
            n = conn.execute(quotas.delete().where(quotas.c.quota_id == quota_id)).rowcount
            if n:  # not deleted meanwhile by someone else
                self.changes.touch(conn)
                admin_events.record(
                    conn, actor or Actor(None, None), "quota.delete", quota_id, dict(row._mapping), None
                )
        return bool(n)

    def limits(self) -> list[dict]:
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(quotas).order_by(quotas.c.created_at))]

    # Requests and grants -----------------------------------------------------------------------
    def request(
        self,
        scope_kind: str,
        scope_value: str | None,
        model: str | None,
        metric: str,
        amount: int,
        reason: str | None,
        by: str | None,
    ) -> dict:
        row = {
            "request_id": "qr_" + secrets.token_hex(5),
            "scope_kind": scope_kind,
            "scope_value": scope_value,
            "model": model,
            "metric": metric,
            "amount": amount,
            "reason": reason,
            "status": PENDING,
            "requested_by": by,
            "requested_at": now_ms(),
        }
        with self.db.begin() as conn:
            conn.execute(quota_requests.insert().values(**row))
        return self.get_request(str(row["request_id"])) or row

    def get_request(self, request_id: str) -> dict | None:
        with self.db.connect() as conn:
            r = conn.execute(select(quota_requests).where(quota_requests.c.request_id == request_id)).first()
        return dict(r._mapping) if r else None

    def requests(self, status: str | None = None) -> list[dict]:
        q = select(quota_requests).order_by(quota_requests.c.requested_at)
        if status:
            q = q.where(quota_requests.c.status == status)
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def decide(
        self,
        request_id: str,
        approve: bool,
        by: str | None,
        reason: str | None,
        granted: int | None = None,
        actor: Actor | None = None,
    ) -> dict | None:
        """Approve (optionally a smaller amount) or deny a pending request; None if there is no
        pending request with that id. Only a pending request changes, so two admins deciding at
        once cannot both win (and only the winner's decision is recorded as an event)."""
        r = quota_requests.c
        with self.db.begin() as conn:
            row = conn.execute(select(quota_requests).where(r.request_id == request_id)).first()
            if row is None or row.status != PENDING:
                return None
            values = {
                "status": APPROVED if approve else DENIED,
                "granted": (granted if granted is not None else row.amount) if approve else None,
                "decided_by": by,
                "decided_at": now_ms(),
                "decision_reason": reason,
            }
            n = conn.execute(
                quota_requests.update().where(r.request_id == request_id, r.status == PENDING).values(**values)
            ).rowcount
            if not n:
                return None
            if approve:
                self.changes.touch(conn)
            after = dict(conn.execute(select(quota_requests).where(r.request_id == request_id)).one()._mapping)
            action = "quota_request.approve" if approve else "quota_request.deny"
            admin_events.record(conn, actor or Actor(None, by), action, request_id, dict(row._mapping), after)
        return after

    def grants(self, since_ms: int) -> list[dict]:
        """Approved requests decided since ``since_ms`` (older ones raise no current period)."""
        r = quota_requests.c
        q = select(quota_requests).where(r.status == APPROVED, r.decided_at >= since_ms)
        with self.db.connect() as conn:
            return [dict(x._mapping) for x in conn.execute(q)]

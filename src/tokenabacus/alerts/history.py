"""The alert history and leases in the ledger database.

``claim`` inserts an alert's row under its unique (rule, scope, period): only the process whose
insert succeeds sends it, so two evaluators (or a restart) never page twice. ``Lease`` keeps one
evaluator and one report sender across processes and replicas.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import and_, exc, func, insert, select, update

from tokenabacus.ledger.database import Database
from tokenabacus.ledger.leases import Lease  # noqa: F401  (alerts.engine and schedules use history.Lease)
from tokenabacus.ledger.schema import alert_events


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

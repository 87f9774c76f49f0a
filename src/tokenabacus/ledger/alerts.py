"""The alert history in the ledger database: every alert fired, and its delivery to each channel.

``claim`` inserts an alert under its unique (rule, scope, period) together with one delivery row
per channel, in one transaction: only the process whose insert succeeds sends it, so two
evaluators (or a restart) never page twice, and an alert is never recorded without what is still
to send. A delivery row is the durable queue entry of one alert for one channel: a sender claims
an attempt (``begin_attempt``) before it sends, then records the outcome.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exc, func, insert, select, update

from tokenabacus.calendar import now_ms
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.schema import alert_deliveries, alert_events

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
ERROR_CHARS = 300


@dataclass(frozen=True)
class Delivery:
    """A delivery due to be attempted, with the alert row it carries."""

    id: int
    channel: str
    idempotency_key: str
    attempts: int  # attempts made so far
    alert: dict[str, Any]


def outcome(state: str, error: str | None) -> str:
    """What the history says about one channel: delivered, failed (why), or pending."""
    if state == DELIVERED:
        return "delivered"
    if state == FAILED:
        return f"failed: {error or 'unknown'}"
    return f"pending (last try: {error})" if error else "pending"


class AlertHistory:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Firing ------------------------------------------------------------------------------------
    def claim(
        self, row: dict[str, Any], channels: Iterable[str], dropped: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str]] | None:
        """Insert an alert with a pending delivery per channel (and a failed one, with its reason,
        per channel in ``dropped``); its id and each pending channel's idempotency key, or None
        when this (rule, scope, period) fired already."""
        now = now_ms()
        keys = {c: uuid.uuid4().hex for c in channels}
        try:
            with self.db.begin() as conn:
                res = conn.execute(insert(alert_events).values(**row, deliveries="{}"))
                alert_id = int(res.inserted_primary_key[0])  # type: ignore[index]
                rows = [_delivery(alert_id, c, PENDING, k, now, now) for c, k in keys.items()]
                for c, why in (dropped or {}).items():
                    rows.append(_delivery(alert_id, c, FAILED, uuid.uuid4().hex, now, now, why))
                if rows:
                    conn.execute(insert(alert_deliveries), rows)
        except exc.IntegrityError:
            return None
        return alert_id, keys

    def last_fired(self, rule: str, scope: str, threshold: float | None = None) -> int | None:
        """When ``rule`` last fired for ``scope`` (at this threshold, when one is given)."""
        a = alert_events.c
        cond = and_(a.rule == rule, a.scope == scope)
        if threshold is not None:
            # Not ``==``: MariaDB's FLOAT is single precision, so 0.3 comes back as 0.30000001.
            eps = max(abs(threshold), 1.0) * 1e-6
            cond = and_(cond, a.threshold.between(threshold - eps, threshold + eps))
        with self.db.connect() as conn:
            return conn.execute(select(func.max(a.fired_at)).where(cond)).scalar()

    # Reading -----------------------------------------------------------------------------------
    def history(self, since_ms: int | None = None, rule: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts fired, newest first, each with ``deliveries``: channel -> outcome."""
        a = alert_events.c
        q = select(alert_events).order_by(a.fired_at.desc(), a.id.desc()).limit(limit)
        if since_ms is not None:
            q = q.where(a.fired_at >= since_ms)
        if rule is not None:
            q = q.where(a.rule == rule)
        with self.db.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        outcomes = self.outcomes([r["id"] for r in rows])
        for r in rows:
            # Alerts from before the delivery rows (revision 0008) kept their outcomes as JSON.
            r["deliveries"] = {**json.loads(r["deliveries"] or "{}"), **outcomes.get(r["id"], {})}
        return rows

    def outcomes(self, alert_ids: list[int]) -> dict[int, dict[str, str]]:
        d = alert_deliveries.c
        out: dict[int, dict[str, str]] = {}
        with self.db.connect() as conn:
            for i in range(0, len(alert_ids), 500):
                q = select(d.alert_id, d.channel, d.state, d.error).where(d.alert_id.in_(alert_ids[i : i + 500]))
                for alert_id, channel, state, error in conn.execute(q.order_by(d.id)):
                    out.setdefault(alert_id, {})[channel] = outcome(state, error)
        return out

    def backlog(self) -> dict[str, int]:
        """Deliveries not yet delivered or failed, per channel."""
        d = alert_deliveries.c
        q = select(d.channel, func.count()).where(d.state == PENDING).group_by(d.channel)
        with self.db.connect() as conn:
            return {c: int(n) for c, n in conn.execute(q)}

    # Sending -----------------------------------------------------------------------------------
    def due(self, channel: str, at_ms: int, limit: int, alert_ids: Iterable[int] | None = None) -> list[Delivery]:
        """A channel's pending deliveries whose next attempt may start at ``at_ms``, oldest first."""
        d = alert_deliveries.c
        q = (
            select(d.id.label("_id"), d.idempotency_key.label("_key"), d.attempts.label("_attempts"), alert_events)
            .join(alert_events, alert_events.c.id == d.alert_id)
            .where(d.state == PENDING, d.channel == channel, d.next_at <= at_ms)
            .order_by(d.next_at, d.id)
            .limit(limit)
        )
        if alert_ids is not None:
            q = q.where(d.alert_id.in_(list(alert_ids)))
        with self.db.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        return [Delivery(r.pop("_id"), channel, r.pop("_key"), r.pop("_attempts"), r) for r in rows]

    def next_due(self, channel: str, alert_ids: Iterable[int] | None = None) -> int | None:
        """When the channel's next pending delivery may be attempted (None: nothing pending)."""
        d = alert_deliveries.c
        q = select(func.min(d.next_at)).where(d.state == PENDING, d.channel == channel)
        if alert_ids is not None:
            q = q.where(d.alert_id.in_(list(alert_ids)))
        with self.db.connect() as conn:
            return conn.execute(q).scalar()

    def begin_attempt(self, delivery_id: int, attempts: int, until_ms: int) -> bool:
        """Count one more attempt and keep other senders off the row until ``until_ms``; False
        when someone else took the row first (its attempts moved, or it is settled)."""
        d = alert_deliveries.c
        with self.db.begin() as conn:
            return bool(
                conn.execute(
                    update(alert_deliveries)
                    .where(d.id == delivery_id, d.state == PENDING, d.attempts == attempts)
                    .values(attempts=attempts + 1, next_at=until_ms, updated_at=now_ms())
                ).rowcount
            )

    def undo_attempt(self, delivery_id: int, attempts: int) -> None:
        """An attempt cut short by a stop (``attempts`` made before it): not counted, due again at once."""
        d = alert_deliveries.c
        with self.db.begin() as conn:
            conn.execute(
                update(alert_deliveries)
                .where(d.id == delivery_id, d.state == PENDING, d.attempts == attempts + 1)
                .values(attempts=attempts, next_at=now_ms(), updated_at=now_ms())
            )

    def delivered(self, delivery_id: int) -> None:
        self._settle(delivery_id, state=DELIVERED, error=None)

    def failed(self, delivery_id: int, error: str) -> None:
        self._settle(delivery_id, state=FAILED, error=error[:ERROR_CHARS])

    def retry(self, delivery_id: int, at_ms: int, error: str) -> None:
        self._settle(delivery_id, next_at=at_ms, error=error[:ERROR_CHARS])

    def abandon(self, channels: Iterable[str]) -> int:
        """Fail what is pending for a channel no longer configured (nothing could ever send it)."""
        d = alert_deliveries.c
        with self.db.begin() as conn:
            return conn.execute(
                update(alert_deliveries)
                .where(d.state == PENDING, d.channel.not_in(list(channels)))
                .values(state=FAILED, error="the channel is no longer configured", updated_at=now_ms())
            ).rowcount

    def _settle(self, delivery_id: int, **values: Any) -> None:
        d = alert_deliveries.c
        with self.db.begin() as conn:
            conn.execute(
                update(alert_deliveries)
                .where(d.id == delivery_id, d.state == PENDING)
                .values(**values, updated_at=now_ms())
            )


def _delivery(
    alert_id: int, channel: str, state: str, key: str, next_at: int, now: int, error: str | None = None
) -> dict[str, Any]:
    return {"alert_id": alert_id, "channel": channel, "state": state, "idempotency_key": key, "attempts": 0,
            "next_at": next_at, "updated_at": now, "error": error}  # fmt: skip

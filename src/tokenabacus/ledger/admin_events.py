"""Admin events: who changed what, when and from where, with the row before and after.

An event is written by ``record`` on the connection of the change it describes, inside the same
transaction, so there is never a change without its event nor an event without its change. Rows
are only appended; ``AdminEvents`` reads them. All methods are synchronous (worker threads and
the CLI only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, select

from tokenabacus.calendar import now_ms
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.schema import admin_events

CLI = "cli"  # the actor key id of a command run on the gateway's machine
CHARGEBACK_EXPORTED = "chargeback.export"  # target: the month, e.g. 2026-11
MAX_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: an admin key (its id and name, and the client address the API judged),
    or the command line (``key_id`` "cli", ``name`` the OS user)."""

    key_id: str | None
    name: str | None
    client_ip: str | None = None


def _json(row: dict[str, Any] | None) -> str | None:
    if row is None:
        return None
    # Column names may come back as a str subclass (SQLAlchemy's quoted_name), which orjson refuses as a key.
    return orjson.dumps({str(k): v for k, v in row.items()}, option=orjson.OPT_SORT_KEYS).decode()


def record(
    conn: Connection,
    actor: Actor,
    action: str,
    target_id: str | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """Append one event on ``conn`` (the change's own transaction)."""
    conn.execute(
        admin_events.insert().values(
            at_ms=now_ms(),
            actor_key_id=(actor.key_id or "")[:64] or None,
            actor_name=(actor.name or "")[:200] or None,
            client_ip=(actor.client_ip or "")[:64] or None,
            action=action,
            target_id=target_id,
            before_json=_json(before),
            after_json=_json(after),
        )
    )


class AdminEvents:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, actor: Actor, action: str, target_id: str | None, after: dict[str, Any] | None = None) -> None:
        """An event that is not a change of a row (an export, a sign-in), in its own transaction."""
        with self.db.begin() as conn:
            record(conn, actor, action, target_id, None, after)

    def list(
        self,
        action: str | None = None,
        target_id: str | None = None,
        actor_key_id: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Events newest first, ``before`` and ``after`` as objects. ``action`` ending in a dot is
        a prefix (``quota.``: every quota action)."""
        e = admin_events.c
        q = select(admin_events)
        if action:
            q = q.where(e.action.startswith(action, autoescape=True) if action.endswith(".") else e.action == action)
        if target_id:
            q = q.where(e.target_id == target_id)
        if actor_key_id:
            q = q.where(e.actor_key_id == actor_key_id)
        if since_ms is not None:
            q = q.where(e.at_ms >= since_ms)
        if until_ms is not None:
            q = q.where(e.at_ms < until_ms)
        q = q.order_by(e.id.desc()).limit(max(1, min(limit, MAX_ROWS)))
        with self.db.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for r in rows:
            before, after = r.pop("before_json"), r.pop("after_json")
            r["before"] = orjson.loads(before) if before else None
            r["after"] = orjson.loads(after) if after else None
        return rows

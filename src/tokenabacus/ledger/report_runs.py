"""Scheduled reports sent, in the ledger database: one row per (schedule, period), claimed before
anything is sent, so a period goes out once even when two processes race for it."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import exc, insert, select, update

from tokenabacus.calendar import now_ms
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.schema import report_runs

RECENT = 100  # runs listed at most, newest first


def claim(db: Database, schedule: str, period: str) -> int | None:
    """The new run's id, or None when this (schedule, period) was claimed already."""
    try:
        with db.begin() as conn:
            res = conn.execute(
                insert(report_runs).values(schedule=schedule, period=period, sent_at=now_ms(), deliveries="{}")
            )
            return int(res.inserted_primary_key[0])  # type: ignore[index]
    except exc.IntegrityError:
        return None


def record(db: Database, run_id: int, deliveries: dict[str, str]) -> None:
    """What each channel said about the run's message."""
    with db.begin() as conn:
        conn.execute(update(report_runs).where(report_runs.c.id == run_id).values(deliveries=json.dumps(deliveries)))


def recent(db: Database, schedule: str | None = None) -> list[dict[str, Any]]:
    """The latest runs (of ``schedule``, or of all), newest first."""
    q = select(report_runs).order_by(report_runs.c.sent_at.desc()).limit(RECENT)
    if schedule:
        q = q.where(report_runs.c.schedule == schedule)
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]

"""Read queries over raw usage records at a grain finer than any rollup: each caller's requests and
tokens per minute, a caller's usual rate over a stretch, who a caller is, and each model's
requests per status. The suspicious-bursts report and the alert detectors ask these; the SQL is
here, beside the schema.

Every window is [since_ms, until_ms) in UTC ms. A caller is the value of one usage column
(key_id, user, project, department, client_ip); records without one are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column, select

from tokenabacus.calendar import MINUTE_MS
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.record import REJECTED
from tokenabacus.ledger.schema import usage_records as raw

Filters = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Minute:
    """One caller's records in one minute."""

    caller: str
    at_ms: int  # the minute's start
    requests: int
    tokens: int


@dataclass(frozen=True)
class Usual:
    """One caller's records over a stretch, and the minutes it was active in."""

    requests: int
    tokens: int
    active_minutes: int


def _minute() -> ColumnElement[Any]:
    return raw.c.timestamp - raw.c.timestamp % literal_column(str(MINUTE_MS))


def _where(by: str, since_ms: int, until_ms: int, filters: Filters | None) -> list[ColumnElement[bool]]:
    conds = [raw.c.timestamp >= since_ms, raw.c.timestamp < until_ms, raw.c[by].is_not(None)]
    conds += [raw.c[d].in_(list(v)) for d, v in (filters or {}).items()]
    return conds


def per_minute_by_caller(
    db: Database, by: str, since_ms: int, until_ms: int, filters: Filters | None = None
) -> list[Minute]:
    """Requests and tokens of each caller (``by``) in each minute it sent anything."""
    col, minute = raw.c[by], _minute()
    q = (
        select(col, minute, func.count(), func.coalesce(func.sum(raw.c.total_tokens), 0))
        .where(*_where(by, since_ms, until_ms, filters))
        .group_by(col, minute)
    )
    with db.connect() as conn:
        return [Minute(c, int(at), int(n), int(tok)) for c, at, n, tok in conn.execute(q)]


def usual_by_caller(
    db: Database, by: str, since_ms: int, until_ms: int, filters: Filters | None = None
) -> dict[str, Usual]:
    """Each caller's requests, tokens and active minutes over the stretch."""
    col = raw.c[by]
    q = (
        select(col, func.count(), func.coalesce(func.sum(raw.c.total_tokens), 0), func.count(func.distinct(_minute())))
        .where(*_where(by, since_ms, until_ms, filters))
        .group_by(col)
    )
    with db.connect() as conn:
        return {c: Usual(int(n), int(tok), int(m)) for c, n, tok, m in conn.execute(q)}


def owners(
    db: Database, by: str, callers: Iterable[str], since_ms: int, until_ms: int, filters: Filters | None = None
) -> dict[str, tuple[str | None, str | None, str | None]]:
    """The (user, project, department) each caller's records in the stretch carry."""
    col = raw.c[by]
    q = (
        select(col, func.max(raw.c.user), func.max(raw.c.project), func.max(raw.c.department))
        .where(col.in_(list(callers)), *_where(by, since_ms, until_ms, filters))
        .group_by(col)
    )
    with db.connect() as conn:
        return {c: (u, p, d) for c, u, p, d in conn.execute(q)}


def requests_by_model_status(db: Database, since_ms: int, until_ms: int) -> list[tuple[str | None, str, int]]:
    """(model, status, requests) over the stretch, refusals left out (they are policy working)."""
    q = (
        select(raw.c.model, raw.c.status, func.count())
        .where(raw.c.timestamp >= since_ms, raw.c.timestamp < until_ms, raw.c.status != REJECTED)
        .group_by(raw.c.model, raw.c.status)
    )
    with db.connect() as conn:
        return [(m, s, int(n)) for m, s, n in conn.execute(q)]

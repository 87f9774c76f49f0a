"""Named reads of summed usage records: the daily sums forecasts and bills are made of, the
tokens per model a forecast is priced by, and the usage of a hardware pool's models per team. Each
is one GROUP BY over ``usage_records``; the callers (billing) turn the sums into forecasts, bills
and cost shares.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from sqlalchemy import BigInteger, func, literal_column, select

from tokenabacus.calendar import HOUR_MS, MINUTE_MS, midnight_ms
from tokenabacus.ledger import rollups
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.record import REJECTED
from tokenabacus.ledger.schema import usage_records as usage


@dataclass(slots=True)
class DaySum:
    tokens: int = 0  # total_tokens
    cost: int = 0  # cost_micros of the priced records
    requests: int = 0  # records (any status but rejected)
    unpriced: int = 0  # records with tokens but no cost (no price for the model then)


def _bucket_ms(first: date, end: date, zone: tzinfo) -> int:
    """The largest bucket (a divisor of an hour) on whose boundaries every local midnight in
    [first, end] falls: an hour for most zones, 30 or 15 minutes for India, Nepal, Chatham."""
    size = HOUR_MS
    day = first
    while day <= end and size > MINUTE_MS:
        offset = datetime(day.year, day.month, day.day, tzinfo=zone).utcoffset() or timedelta(0)
        size = math.gcd(size, abs(int(offset.total_seconds() * 1000)) % HOUR_MS or HOUR_MS)
        day += timedelta(days=1)
    return size


def daily_sums(
    db: Database,
    by: str,
    first: date,
    end: date,
    zone: tzinfo,
    filters: Mapping[str, str] | None = None,
    values: Collection[str] | None = None,
) -> dict[tuple[str | None, str | None, date], DaySum]:
    """Sums per (value of column ``by``, currency, local day) over the days ``first`` to ``end``
    (exclusive), every status but rejected; ``filters`` are column == value, ``values`` limits
    ``by`` to those values. One query in buckets that never straddle a local midnight: the
    database sums per UTC bucket, Python names the day."""
    span = rollups.span(db)
    if span is None:
        return {}
    # Only the days holding records: a bill dated 1970 to 9998 is not 3 million days of offsets.
    first = max(first, datetime.fromtimestamp(span[0] / 1000, zone).date())
    end = min(end, datetime.fromtimestamp(span[1] / 1000, zone).date() + timedelta(days=1))
    if first >= end:
        return {}
    since, until = midnight_ms(first, zone), midnight_ms(end, zone)
    size = _bucket_ms(first, end, zone)
    c = usage.c
    group = c[by]
    # A literal (not a bound parameter): the GROUP BY then repeats the SELECT's expression exactly,
    # which PostgreSQL requires.
    bucket = (c.timestamp // literal_column(str(size), BigInteger)).label("bucket")
    q = (
        select(
            group.label("g"),
            c.currency,
            bucket,
            func.sum(c.total_tokens),
            func.sum(c.cost_micros),
            func.count(),
            func.count(c.total_tokens) - func.count(c.cost_micros),
        )
        .where(c.timestamp >= since, c.timestamp < until, c.status != REJECTED)
        .group_by(group, c.currency, bucket)
    )
    for k, v in (filters or {}).items():
        q = q.where(c[k] == v)
    if values is not None:
        q = q.where(group.in_(sorted(values)))
    out: dict[tuple[str | None, str | None, date], DaySum] = {}
    days: dict[int, date] = {}
    with db.connect() as conn:
        for g, cur, b, tokens, cost, n, unpriced in conn.execute(q):
            b = int(b)
            day = days.get(b)
            if day is None:
                day = days[b] = datetime.fromtimestamp(b * size / 1000, zone).date()
            s = out.setdefault((g, cur, day), DaySum())
            s.tokens += int(tokens or 0)
            s.cost += int(cost or 0)
            s.requests += int(n)
            s.unpriced += int(unpriced or 0)
    return out


@dataclass(frozen=True, slots=True)
class ModelSum:
    prompt: int  # prompt tokens, the cached ones included
    cached: int
    completion: int


def model_sums(
    db: Database, by: str, since: int, until: int, filters: Mapping[str, str] | None = None
) -> dict[tuple[str | None, str], ModelSum]:
    """Tokens per (value of column ``by``, model) in [since, until) (UTC ms), of the records with
    counted tokens (every status but rejected): the model mix a forecast is priced by."""
    c = usage.c
    q = (
        select(c[by], c.model, func.sum(c.prompt_tokens), func.sum(c.cached_tokens), func.sum(c.completion_tokens))
        .where(c.timestamp >= since, c.timestamp < until, c.status != REJECTED, c.model.is_not(None))
        .where(c.prompt_tokens.is_not(None), c.completion_tokens.is_not(None))
        .group_by(c[by], c.model)
    )
    for k, v in (filters or {}).items():
        q = q.where(c[k] == v)
    with db.connect() as conn:
        return {(g, m): ModelSum(int(p or 0), int(h or 0), int(o or 0)) for g, m, p, h, o in conn.execute(q)}


def usage_by_team(
    db: Database, models: Sequence[str], basis: str, start: int, end: int
) -> list[tuple[str | None, str | None, int]]:
    """(department, project, usage) of ``models`` in [start, end) (UTC ms), by team, in no
    particular order; usage is total_tokens (``basis`` "tokens") or summed duration_ms (request
    time, "busy_time"). Refused requests never reached the hardware, so they weigh nothing."""
    c = usage.c
    col = c.total_tokens if basis == "tokens" else c.duration_ms
    q = (
        select(c.department, c.project, func.sum(col))
        .where(c.model.in_(models), c.timestamp >= start, c.timestamp < end, c.status != REJECTED, col.is_not(None))
        .group_by(c.department, c.project)
    )
    with db.connect() as conn:
        return [(d, p, int(n or 0)) for d, p, n in conn.execute(q)]

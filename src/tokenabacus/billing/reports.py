"""Grouped usage reports over the ledger: tokens, requests and latency by any dimension."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, func, literal, select

from tokenabacus.ledger.record import CANCELLED, ERROR, OK, REJECTED
from tokenabacus.ledger.schema import usage_records as t
from tokenabacus.ledger.store import Store

DIMENSIONS = ("project", "user", "department", "model", "key_id", "status", "day", "hour")
STATUSES = (OK, ERROR, CANCELLED, REJECTED)
TOKEN_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens")
_LOW32 = 0xFFFFFFFF
_BUCKET_MS = {"day": 86_400_000, "hour": 3_600_000}


@dataclass(frozen=True)
class ReportQuery:
    by: tuple[str, ...]
    since_ms: int | None = None
    until_ms: int | None = None
    utc_offset_ms: int = 0  # buckets (day/hour) are cut in this offset from UTC
    status: str | None = None


def _bucket(dim: str, offset_ms: int):
    size = _BUCKET_MS[dim]
    shifted = t.c.timestamp + literal(offset_ms)
    return (shifted - shifted % size).label(dim)


def _sums(sqlite: bool) -> list:
    """Token sums that cannot overflow. SQLite's sum() fails on a 64-bit overflow, which a
    ledger holding absurd figures (written before the writer checked them) reaches with two
    records; so there each value is summed as a high and a low 32-bit half, put back together
    exactly in Python. PostgreSQL and MySQL sum integers into wider types already."""
    if not sqlite:
        return [func.coalesce(func.sum(t.c[k]), 0).label(k) for k in TOKEN_SUMS]
    out = []
    for k in TOKEN_SUMS:
        out.append(func.coalesce(func.sum(t.c[k].op(">>")(32)), 0).label(f"{k}_hi"))
        out.append(func.coalesce(func.sum(t.c[k].op("&")(_LOW32)), 0).label(f"{k}_lo"))
    return out


def run_report(store: Store, q: ReportQuery) -> list[dict]:
    for d in q.by:
        if d not in DIMENSIONS:
            raise ValueError(f"cannot group by {d!r}; choose from {', '.join(DIMENSIONS)}")
    check_status(q.status)
    sqlite = store.engine.dialect.name == "sqlite"
    cols = [_bucket(d, q.utc_offset_ms) if d in _BUCKET_MS else t.c[d].label(d) for d in q.by]
    aggs = [func.count().label("requests"), *_sums(sqlite), func.avg(t.c.duration_ms).label("avg_duration_ms")]
    conds = []
    if q.since_ms is not None:
        conds.append(t.c.timestamp >= q.since_ms)
    if q.until_ms is not None:
        conds.append(t.c.timestamp < q.until_ms)
    if q.status:
        conds.append(t.c.status == q.status)
    stmt = select(*cols, *aggs)
    if conds:
        stmt = stmt.where(and_(*conds))
    if cols:
        stmt = stmt.group_by(*cols).order_by(*cols)
    with store.engine.connect() as conn:
        raw = [dict(r._mapping) for r in conn.execute(stmt)]
    return [_finish(r, q, sqlite) for r in raw]


def _finish(r: dict, q: ReportQuery, sqlite: bool) -> dict:
    out: dict = {}
    for d in q.by:
        v = r[d]
        if d in _BUCKET_MS and v is not None:
            tz = timezone(timedelta(milliseconds=q.utc_offset_ms))
            v = datetime.fromtimestamp((int(v) - q.utc_offset_ms) / 1000, tz).strftime("%Y-%m-%d" if d == "day" else "%Y-%m-%d %H:00")
        out[d] = v
    out["requests"] = int(r["requests"])
    for k in TOKEN_SUMS:
        out[k] = (int(r[f"{k}_hi"]) << 32) + int(r[f"{k}_lo"]) if sqlite else int(r[k])
    avg = r["avg_duration_ms"]
    out["avg_duration_ms"] = round(float(avg), 1) if avg is not None else None
    return out


# Argument checks shared by the CLI and the admin API ---------------------------------------------
def check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; choose from {', '.join(STATUSES)}")


def zone_named(name: str):
    """UTC or an IANA zone (Asia/Shanghai); ValueError for anything else."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)") from None


def parse_when(text: str, zone, name: str) -> int:
    """A date or date-time (naive ones are in `zone`) as UTC epoch milliseconds."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} {text!r}: expected a date like 2026-11-01 or 2026-11-01T08:00") from None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=zone)).timestamp() * 1000)


def build_query(by: tuple[str, ...], since: str | None, until: str | None, tz: str, status: str | None) -> ReportQuery:
    """Validate report arguments into a query; ValueError names the bad one."""
    bad = [d for d in by if d not in DIMENSIONS]
    if bad:
        raise ValueError(f"cannot group by {', '.join(bad)}; choose from {', '.join(DIMENSIONS)}")
    check_status(status)
    zone = zone_named(tz)
    since_ms = parse_when(since, zone, "--since") if since else None
    until_ms = parse_when(until, zone, "--until") if until else None
    # Buckets use the zone's offset at the start of the period (exact for zones without DST).
    ref = datetime.fromtimestamp((since_ms if since_ms is not None else time.time_ns() // 1_000_000) / 1000, timezone.utc)
    offset = zone.utcoffset(ref) or timedelta(0)
    return ReportQuery(by=by, since_ms=since_ms, until_ms=until_ms, utc_offset_ms=int(offset.total_seconds() * 1000), status=status)

"""Grouped usage reports over the ledger: tokens, requests and latency by any dimension.

This module checks the arguments and shapes the rows; the query itself belongs to the usage
records (ledger/usage.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from tokenabacus.ledger.record import CANCELLED, ERROR, OK, REJECTED, now_ms
from tokenabacus.ledger.store import Store
from tokenabacus.ledger.usage import TIME_BUCKETS

DIMENSIONS = ("project", "user", "department", "model", "key_id", "status", "day", "hour")
STATUSES = (OK, ERROR, CANCELLED, REJECTED)


@dataclass(frozen=True)
class ReportQuery:
    by: tuple[str, ...]
    since_ms: int | None = None
    until_ms: int | None = None
    utc_offset_ms: int = 0  # buckets (day/hour) are cut in this offset from UTC
    status: str | None = None


def run_report(store: Store, q: ReportQuery) -> list[dict]:
    for d in q.by:
        if d not in DIMENSIONS:
            raise ValueError(f"cannot group by {d!r}; choose from {', '.join(DIMENSIONS)}")
    check_status(q.status)
    rows = store.usage.totals(
        q.by, since_ms=q.since_ms, until_ms=q.until_ms, status=q.status, utc_offset_ms=q.utc_offset_ms
    )
    return [_finish(r, q) for r in rows]


def _finish(r: dict, q: ReportQuery) -> dict:
    """Buckets as dates in the report's offset, the average latency to a tenth of a ms."""
    tz = timezone(timedelta(milliseconds=q.utc_offset_ms))
    out = dict(r)
    for d in q.by:
        if d in TIME_BUCKETS and r[d] is not None:
            out[d] = datetime.fromtimestamp(r[d] / 1000, tz).strftime("%Y-%m-%d" if d == "day" else "%Y-%m-%d %H:00")
    avg = r["avg_duration_ms"]
    out["avg_duration_ms"] = round(avg, 1) if avg is not None else None
    return out


# Argument checks shared by the CLI and the admin API ---------------------------------------------
def check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; choose from {', '.join(STATUSES)}")


def zone_named(name: str):
    """UTC or an IANA zone (Asia/Shanghai); ValueError for anything else."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name.upper() == "UTC":
        return UTC
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
    ref = datetime.fromtimestamp((since_ms if since_ms is not None else now_ms()) / 1000, UTC)
    offset = zone.utcoffset(ref) or timedelta(0)
    return ReportQuery(
        by=by, since_ms=since_ms, until_ms=until_ms, utc_offset_ms=int(offset.total_seconds() * 1000), status=status
    )

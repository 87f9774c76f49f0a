"""Quota periods in the operator's time zone: where the current one started and when it resets.

Days and months are cut at local midnight (Asia/Shanghai users reset at Beijing midnight, not at
08:00), weeks start on Monday, and "total" never resets. Times are UTC milliseconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

TOTAL_END_MS = 253402300799000  # 9999-12-31: "never"


def bounds(period: str, at_ms: int, tz: ZoneInfo) -> tuple[int, int]:
    """(start, end) of the period holding ``at_ms``, as UTC ms; end is the next period's start."""
    if period == "total":
        return 0, TOTAL_END_MS
    if period == "minute":  # the same instant everywhere
        minute = at_ms - at_ms % 60_000
        return minute, minute + 60_000
    local = datetime.fromtimestamp(at_ms / 1000, tz)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown period {period!r}")
    # Re-localise: adding days across a DST change keeps the wall clock, which is what is meant.
    return _ms(start.replace(tzinfo=None), tz), _ms(end.replace(tzinfo=None), tz)


def _ms(naive: datetime, tz: ZoneInfo) -> int:
    return int(naive.replace(tzinfo=tz).timestamp() * 1000)

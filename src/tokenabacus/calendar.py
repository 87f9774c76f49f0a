"""Time as people name it: zones, local midnights, period bounds, and the one clock.

The ledger's clock is UTC epoch milliseconds; days, weeks and months are cut at midnight in a
zone (Asia/Shanghai users reset at Beijing midnight, not at 08:00), weeks start on Monday, and
"total" never ends. Pure (no I/O) and importing nothing from the package but ``dates``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tokenabacus.dates import check_day

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
TOTAL_END_MS = 253402300799000  # 9999-12-31: "never"
_MONTH = re.compile(r"^\d{4}-\d{2}$")


def now_ms() -> int:
    """The one clock: UTC epoch milliseconds."""
    return int(time.time() * 1000)


def zone_named(name: str) -> tzinfo:
    """UTC or an IANA zone (Asia/Shanghai), surrounding blanks ignored; ValueError (one line) for
    anything else."""
    if name.strip().upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)") from None


def wall_ms(naive: datetime, tz: tzinfo) -> int:
    """The UTC ms of a wall-clock time in ``tz``."""
    return int(naive.replace(tzinfo=tz).timestamp() * 1000)


def midnight_ms(day: date, zone: tzinfo) -> int:
    """The UTC ms at which ``day`` starts in ``zone``."""
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1000)


def day_start(at_ms: int, zone: tzinfo) -> tuple[int, datetime]:
    """The UTC ms of the local midnight that started ``at_ms``'s day, and ``at_ms`` as local time."""
    local = datetime.fromtimestamp(at_ms / 1000, zone)
    return midnight_ms(local.date(), zone), local


def period_bounds(period: str, at_ms: int, tz: tzinfo) -> tuple[int, int]:
    """(start, end) of the period (minute, day, week, month, total) holding ``at_ms``, as UTC ms;
    end is the next period's start."""
    if period == "total":
        return 0, TOTAL_END_MS
    if period == "minute":  # the same instant everywhere
        minute = at_ms - at_ms % MINUTE_MS
        return minute, minute + MINUTE_MS
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
    return wall_ms(start.replace(tzinfo=None), tz), wall_ms(end.replace(tzinfo=None), tz)


def month_start(text: str, zone: tzinfo, what: str) -> int:
    """The first instant of a month given as 2026-11, in ``zone``."""
    if not _MONTH.match(text.strip()):
        raise ValueError(f"{what} {text!r}: expected a month like 2026-11")
    return parse_time(text, zone, what)


def parse_time(value: str | date | datetime, zone: tzinfo, what: str) -> int:
    """A month (2026-11), date (2026-11-01) or date-time as UTC epoch ms; naive ones are in
    ``zone`` (the operator's governance.timezone), so 2026-11-01 is midnight there."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    else:
        text = value.strip()
        if _MONTH.match(text):
            text += "-01"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{what} {value!r}: expected a time like 2026-11, 2026-11-01 or 2026-11-01T08:00"
            ) from None
    check_day(dt.date(), what, str(value))
    return int((dt if dt.tzinfo else dt.replace(tzinfo=zone)).timestamp() * 1000)

"""The stretch of time a named report covers: a period (today, this week from Monday, this month)
or the one before it, a month, or since/until, with the period before it for comparisons."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tokenabacus import calendar
from tokenabacus.billing.arguments import Arg, ArgumentError, naming
from tokenabacus.billing.hardware import month_bounds, month_start
from tokenabacus.billing.reports import parse_when
from tokenabacus.calendar import midnight_ms, zone_named

PERIODS = ("today", "week", "month")


@dataclass(frozen=True)
class Window:
    """[since, until) in UTC ms, the zone its days are cut in, a label, and the period before it
    (the same kind: last week for a week, last month for a month) for comparisons."""

    since_ms: int
    until_ms: int
    tz: str
    label: str
    before: tuple[int, int]


def window(
    tz: str,
    period: str | None = None,
    *,
    previous: bool = False,
    month: str | None = None,
    since: str | None = None,
    until: str | None = None,
    now_ms: int | None = None,
) -> Window:
    """The window a report covers: an explicit ``month`` (YYYY-MM), ``since``/``until`` (until
    defaults to now), or a ``period`` (today, week from Monday, month) holding now, or the one
    before it with ``previous``. ValueError names a bad argument (an ArgumentError when it is
    about the arguments given together)."""
    zone = zone_named(tz)
    now = calendar.now_ms() if now_ms is None else now_ms
    chosen = [x for x in (period, month, since) if x]
    if len(chosen) > 1:
        raise ArgumentError("give one of a period (today, week, month), ", Arg("month"), " YYYY-MM or ", Arg("since"))
    if until and not since:
        raise ArgumentError(Arg("until"), " needs ", Arg("since"))
    if month:
        start = month_start(month)
        a, b = month_bounds(start, zone)
        prev_start = month_bounds((start - timedelta(days=1)).replace(day=1), zone)[0]
        return Window(a, b, tz, month, (prev_start, a))
    if since:
        a = naming("since", lambda text: parse_when(text, zone, "since"), since)
        b = naming("until", lambda text: parse_when(text, zone, "until"), until) if until else now
        if b <= a:
            raise ArgumentError(Arg("until"), " must be after ", Arg("since"))
        label = f"{since} to {until}" if until else f"since {since}"
        return Window(a, b, tz, label, (a - (b - a), a))
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}; choose from {', '.join(PERIODS)}")
    today = datetime.fromtimestamp(now / 1000, zone).date()
    if period == "today":
        day = today - timedelta(days=1) if previous else today
        a, b = midnight_ms(day, zone), midnight_ms(day + timedelta(days=1), zone)
        return Window(a, b, tz, day.isoformat(), (midnight_ms(day - timedelta(days=1), zone), a))
    if period == "week":
        monday = today - timedelta(days=today.weekday()) - timedelta(weeks=1 if previous else 0)
        a, b = midnight_ms(monday, zone), midnight_ms(monday + timedelta(weeks=1), zone)
        return Window(a, b, tz, f"week of {monday.isoformat()}", (midnight_ms(monday - timedelta(weeks=1), zone), a))
    first = today.replace(day=1)
    if previous:
        first = (first - timedelta(days=1)).replace(day=1)
    return window(tz, month=first.strftime("%Y-%m"))


def month_window(tz: str, month: str | None = None) -> Window:
    """The window of ``month`` (YYYY-MM), or of last month in ``tz``."""
    return window(tz, month=month or window(tz, "month", previous=True).label)

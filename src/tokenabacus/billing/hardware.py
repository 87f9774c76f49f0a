"""Self-hosted hardware: a GPU pool's monthly cost split across the departments and projects that
used its models that month, by their share of tokens (``basis: tokens``) or of request time
(``basis: busy_time``, summed duration_ms). Shares are integer micros that add up exactly to the
month's cost (largest-remainder rounding); a month nobody used is one unallocated row.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from tokenabacus.calendar import wall_ms, zone_named
from tokenabacus.dates import check_month
from tokenabacus.ledger.store import Store
from tokenabacus.ledger.usage_sums import usage_by_team
from tokenabacus.money import format_money

BASES = ("tokens", "busy_time")


def month_start(month: str) -> datetime:
    """The first day of ``month`` (YYYY-MM); ValueError for a malformed or out-of-range one."""
    try:
        first = datetime.strptime(month.strip(), "%Y-%m")
    except ValueError:
        raise ValueError(f"month {month!r}: expected YYYY-MM such as 2026-11") from None
    check_month(first.year, first.month, "month", month)
    return first


def month_bounds(month: str | datetime, tz: tzinfo) -> tuple[int, int]:
    """(start, end) of ``month`` (YYYY-MM, or its first day) in ``tz``, as UTC ms; end is the
    next month's start."""
    first = month_start(month) if isinstance(month, str) else month
    after = (first + timedelta(days=32)).replace(day=1)
    return wall_ms(first, tz), wall_ms(after, tz)


def in_force(rows: list[dict], at_ms: int) -> list[dict]:
    """Each pool's cost in force at ``at_ms``: its latest row started by then."""
    latest: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["effective_from"]):
        if r["effective_from"] <= at_ms:
            latest[r["pool"]] = r
    return [latest[p] for p in sorted(latest)]


def for_month(rows: list[dict], start: int, end: int) -> list[dict]:
    """Each pool's cost for the month [start, end): the figure in force at its middle. A month is
    charged whole at one figure, and a figure set "from 2026-11" in one time zone is November's
    in any other (zones differ by hours, months by weeks)."""
    return in_force(rows, start + (end - start) // 2)


def largest_remainder(amount: int, weights: list[int]) -> list[int]:
    """Split ``amount`` in proportion to ``weights`` into integers summing exactly to it: each
    gets the floor of its share, and the units left over go to the largest remainders (ties: the
    earlier weight)."""
    total = sum(weights)
    if total <= 0:
        raise ValueError("nothing to split by")
    shares = [amount * w // total for w in weights]
    rests = [amount * w % total for w in weights]
    left = amount - sum(shares)
    for i in sorted(range(len(weights)), key=lambda i: (-rests[i], i))[:left]:
        shares[i] += 1
    return shares


def _usage(
    store: Store, models: list[str], basis: str, start: int, end: int
) -> list[tuple[str | None, str | None, int]]:
    """(department, project, tokens or busy ms) of the pool's models in [start, end), by team,
    the teams that used it at all."""
    rows = usage_by_team(store.db, models, basis, start, end)
    # A fixed order (None first), so the same ledger always gets the same pennies.
    return sorted(
        (r for r in rows if r[2] > 0), key=lambda r: (r[0] is not None, r[0] or "", r[1] is not None, r[1] or "")
    )


def apportion(store: Store, month: str, tz: tzinfo | str) -> list[dict]:
    """Every pool's cost for ``month`` (YYYY-MM, cut at midnight in ``tz``) split by department
    and project. Each pool's rows' ``cost_micros`` add up exactly to its monthly amount."""
    start, end = month_bounds(month, zone_named(tz) if isinstance(tz, str) else tz)
    out = []
    for cost in for_month(store.prices.hardware(), start, end):
        amount, currency = int(cost["monthly_micros"]), cost["currency"]
        base = {"month": month, "pool": cost["pool"], "basis": cost["basis"], "currency": currency}
        teams = _usage(store, cost["models"], cost["basis"], start, end)
        if not teams:
            out.append({**base, "department": None, "project": None, "usage": 0, "share": None, "cost_micros": amount})
            continue
        weights = [n for _, _, n in teams]
        total = sum(weights)
        for (dept, project, n), micros in zip(teams, largest_remainder(amount, weights), strict=True):
            out.append(
                {
                    **base,
                    "department": dept,
                    "project": project,
                    "usage": n,
                    "share": round(n / total, 6),
                    "cost_micros": micros,
                }
            )
    for r in out:
        r["cost"] = format_money(r["cost_micros"], r["currency"])
    return out

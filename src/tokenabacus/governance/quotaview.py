"""Limits as people see them: which are in force, how much each has used and has left, when it
resets, and the grants that raised it. One code path for `tokenabacus quota ...` and /admin.

Synchronous (worker threads and the CLI). Use comes from the running gateway's counters when the
caller has them (they include requests in flight), else from the ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from tokenabacus.calendar import now_ms
from tokenabacus.config import SCOPES, Settings
from tokenabacus.governance.quotas import Grant, Limit, LimitSet, config_limits, row_limit
from tokenabacus.ledger.store import Store
from tokenabacus.ledger.usage import used_since

UsageFn = Callable[[Limit, int], tuple[int, int]]  # (limit, period start) -> (used, reserved)


def scope_of(
    key: str | None = None,
    user: str | None = None,
    project: str | None = None,
    department: str | None = None,
    global_: bool = False,
) -> tuple[str, str | None]:
    """Exactly one scope, or ValueError worded for a command line."""
    given = [(k, v) for k, v in (("key", key), ("user", user), ("project", project), ("department", department)) if v]
    if len(given) + int(global_) != 1:
        raise ValueError("name exactly one scope: --key, --user, --project, --department or --global")
    return given[0] if given else ("global", None)


def check_metric(
    tokens: int | None, requests: int | None, cost: str | None = None, currency: str = "CNY"
) -> tuple[str, int]:
    """(metric, amount): tokens, requests, or ``cost:CUR`` with the amount in micro-units."""
    if sum(x is not None for x in (tokens, requests, cost)) != 1:
        raise ValueError("give exactly one of --tokens, --requests or --cost")
    if cost is not None:
        from tokenabacus.money import check_currency, parse_amount

        return f"cost:{check_currency(currency)}", parse_amount(cost, "--cost")
    amount = tokens if tokens is not None else requests
    assert amount is not None
    if amount < 0:
        raise ValueError("a limit cannot be negative")
    if amount > 10**15:
        raise ValueError("a limit above 10^15 is not a limit")
    return ("tokens" if tokens is not None else "requests"), amount


def show_amount(metric: str, amount: int) -> str:
    """A limit's figure as people read it: a count, or money for a cost limit."""
    if metric.startswith("cost:"):
        from tokenabacus.money import format_money

        return format_money(amount, metric[5:]) or ""
    return f"{amount:,}"


def grants_of(rows: list[dict]) -> list[Grant]:
    return [
        Grant(r["scope_kind"], r["scope_value"], r["model"], r["metric"], int(r["granted"]), r["decided_at"])
        for r in rows
    ]


def current(store: Store, settings: Settings) -> LimitSet:
    """The limits in force now: the config file's, replaced by stored ones of the same identity."""
    tz = ZoneInfo(settings.governance.timezone)
    limits = config_limits(settings.governance.declared_quotas()) + [row_limit(r) for r in store.quotas.limits()]
    return LimitSet(limits, grants_of(store.quotas.grants(0)), tz)


def ledger_usage(store: Store) -> UsageFn:
    def use(lim: Limit, start: int) -> tuple[int, int]:
        return used_since(store.db, lim.scope_kind, lim.scope_value, lim.model, lim.metric, start), 0

    return use


def shared_usage(settings: Settings, lims: LimitSet, fallback: UsageFn) -> UsageFn:
    """Use as the gateways share it in Redis (requests in flight included); the ledger's figure
    for a counter Redis does not hold (nothing used yet this period, or Redis is unreachable)."""
    import asyncio

    from tokenabacus.governance.redis_counters import RedisCounters

    assert settings.redis.url
    now = now_ms()
    keys = [lim.counter_key(lims.window(lim, now)[0]) for lim in lims.limits]

    async def fetch() -> list[tuple[int, int]]:
        counters = RedisCounters(settings.redis.url or "", prefix=settings.redis.prefix, on_error="closed")
        try:
            return await counters.usage(keys)
        finally:
            await counters.close()

    try:
        figures = dict(zip(keys, asyncio.run(fetch()), strict=True))
    except Exception:
        return fallback

    def use(lim: Limit, start: int) -> tuple[int, int]:
        got = figures.get(lim.counter_key(start))
        return got if got and got != (0, 0) else fallback(lim, start)

    return use


# Status as printed and exported (CLI and /admin/quotas/status alike).
STATUS_COLUMNS = ["quota_id", "scope", "name", "model", "metric", "period", "limit", "granted", "used"]
STATUS_COLUMNS += ["reserved", "remaining", "resets_at"]
REQUEST_COLUMNS = [
    "request_id",
    "status",
    "scope_kind",
    "scope_value",
    "metric",
    "amount",
    "granted",
    "reason",
    "requested_by",
    "requested_at",
    "decided_by",
    "decided_at",
    "decision_reason",
]


def status(
    lims: LimitSet,
    usage: UsageFn,
    visible: Callable[[Limit], bool] = lambda _: True,
    scope: tuple[str, str | None] | None = None,
    at_ms: int | None = None,
) -> list[dict]:
    now = at_ms if at_ms is not None else now_ms()
    rows = []
    for lim in lims.limits:
        if scope is not None and (lim.scope_kind, lim.scope_value) != scope:
            continue
        if not visible(lim):
            continue
        start, end = lims.window(lim, now)
        used, reserved = usage(lim, start)
        granted = lims.granted(lim, now)
        effective = lim.limit + granted
        rows.append(
            {
                "quota_id": lim.quota_id,
                "scope": lim.scope_kind,
                "name": lim.scope_value,
                "model": lim.model,
                "metric": lim.metric,
                "period": lim.period,
                "limit": lim.limit,
                "granted": granted,
                "effective_limit": effective,
                "used": used,
                "reserved": reserved,
                "remaining": max(0, effective - used - reserved),
                "period_start": _iso(start, lims.tz) if lim.period != "total" else None,
                "resets_at": _iso(end, lims.tz) if lim.period != "total" else None,
                "source": lim.source,
            }
        )
    rows.sort(key=lambda r: (SCOPES.index(r["scope"]), r["name"] or "", r["metric"], r["period"]))
    return rows


def limit_rows(lims: LimitSet) -> list[dict]:
    return [
        {
            "quota_id": lim.quota_id,
            "scope": lim.scope_kind,
            "name": lim.scope_value,
            "model": lim.model,
            "metric": lim.metric,
            "period": lim.period,
            "limit": lim.limit,
            "source": lim.source,
        }
        for lim in lims.limits
    ]


def _iso(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="seconds")

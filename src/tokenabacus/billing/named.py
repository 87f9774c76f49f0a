"""The questions finance and the platform team ask, each one report: this period's ranking
(``top``), each day's peak hour (``peaks``), cost per model and per 1k tokens (``models``), callers
bursting far above their own baseline (``suspicious``) and our count against the upstream's
(``drift``). The month's chargeback is in billing/chargeback.py.

All but ``suspicious`` are ``run_report`` (the rollups) reshaped; ``suspicious`` needs minutes,
finer than any rollup, so it reads raw records of its window and of the baseline before it.
Each returns a ``Table``, which the CLI prints or exports and /admin returns, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal_column, select

from tokenabacus import calendar
from tokenabacus.billing.hardware import month_bounds, month_start
from tokenabacus.billing.reports import DIMENSIONS, Report, ReportQuery, run_report
from tokenabacus.calendar import DAY_MS, MINUTE_MS, midnight_ms, zone_named
from tokenabacus.ledger.schema import usage_records as raw
from tokenabacus.ledger.store import Store
from tokenabacus.money import format_money

PERIODS = ("today", "week", "month")
CALLERS = ("key_id", "user", "project", "department", "client_ip")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    money: frozenset[str] = frozenset()  # columns holding micros

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes}


# Windows ----------------------------------------------------------------------------------------
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
    before it with ``previous``. ValueError names a bad argument."""
    from tokenabacus.billing.reports import parse_when

    zone = zone_named(tz)
    now = calendar.now_ms() if now_ms is None else now_ms
    chosen = [x for x in (period, month, since) if x]
    if len(chosen) > 1:
        raise ValueError("give one of a period (--today, --week, --month), --month YYYY-MM or --since")
    if until and not since:
        raise ValueError("--until needs --since")
    if month:
        start = month_start(month)
        a, b = month_bounds(start, zone)
        prev_start = month_bounds((start - timedelta(days=1)).replace(day=1), zone)[0]
        return Window(a, b, tz, month, (prev_start, a))
    if since:
        a = parse_when(since, zone, "--since")
        b = parse_when(until, zone, "--until") if until else now
        if b <= a:
            raise ValueError("--until must be after --since")
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


def _query(win: Window, by: tuple[str, ...], filters: Mapping[str, Sequence[str]] | None, **kw: Any) -> ReportQuery:
    return ReportQuery(
        by=by,
        since_ms=win.since_ms,
        until_ms=win.until_ms,
        tz=win.tz,
        filters=tuple(sorted((k, tuple(v)) for k, v in (filters or {}).items())),
        **kw,
    )


def _pct(part: int | None, whole: int | None) -> float | None:
    return round(100 * part / whole, 1) if part is not None and whole else None


def _change(now: int | None, before: int | None) -> float | None:
    return round(100 * (now - before) / before, 1) if now is not None and before else None


def check_dimension(by: str, allowed: Sequence[str] = DIMENSIONS) -> str:
    if by not in allowed:
        raise ValueError(f"cannot rank by {by!r}; choose from {', '.join(allowed)}")
    return by


# top --------------------------------------------------------------------------------------------
def top(
    store: Store,
    by: str,
    win: Window,
    filters: Mapping[str, Sequence[str]] | None = None,
    rank: str = "tokens",
    limit: int | None = None,
    currency: str | None = None,
) -> Table:
    """Groups of ``by`` ranked by tokens and by cost, each with its share of the whole and its
    change against the period before. Cost is in one ``currency`` (default: the one most
    requests were charged in); costs in others are left out of it, and a note says so."""
    check_dimension(by)
    if rank not in ("tokens", "cost"):
        raise ValueError("rank by tokens or cost")
    now = _by_currency(run_report(store, _query(win, (by, "currency"), filters, latency=False)), by)
    b0, b1 = win.before
    clock = calendar.now_ms()
    if win.since_ms <= clock < win.until_ms:
        # A period still running is compared with the same stretch of the one before (this week
        # so far against last week up to the same hour), not with the whole of it.
        b1 = min(b1, b0 + clock - win.since_ms)
    before_win = replace(win, since_ms=b0, until_ms=b1)
    was = _by_currency(run_report(store, _query(before_win, (by, "currency"), filters, latency=False)), by)
    priced: dict[str, int] = {}
    for g in now.values():
        for cur, (n, _) in g["costs"].items():
            priced[cur] = priced.get(cur, 0) + n
    cur = currency or (min(priced, key=lambda c: (-priced[c], c)) if priced else None)
    total_tokens = sum(g["total_tokens"] for g in now.values())
    costs = [g["costs"][cur][1] for g in now.values() if cur in g["costs"]]
    total_cost = sum(costs) if costs else None
    rows = []
    for name, g in now.items():
        prev = was.get(name, {"total_tokens": 0, "requests": 0, "costs": {}})
        cost = g["costs"][cur][1] if cur in g["costs"] else None
        prev_cost = prev["costs"][cur][1] if cur in prev["costs"] else None
        rows.append(
            {
                "row": "group",
                by: name,
                "requests": g["requests"],
                "total_tokens": g["total_tokens"],
                "tokens_share_pct": _pct(g["total_tokens"], total_tokens),
                "tokens_change_pct": _change(g["total_tokens"], prev["total_tokens"]),
                "cost": format_money(cost, cur),
                "cost_share_pct": _pct(cost, total_cost),
                "cost_change_pct": _change(cost, prev_cost),
                "cost_micros": cost,
                "currency": cur if cost is not None else None,
                "previous_total_tokens": prev["total_tokens"],
                "previous_cost_micros": prev_cost,
            }
        )
    by_tokens = sorted(rows, key=lambda r: (-r["total_tokens"], str(r[by])))
    for i, r in enumerate(by_tokens, start=1):
        r["tokens_rank"] = i
    for i, r in enumerate(
        sorted((r for r in rows if r["cost_micros"] is not None), key=lambda r: (-r["cost_micros"], str(r[by]))),
        start=1,
    ):
        r["cost_rank"] = i
    if rank == "cost":
        rows.sort(key=lambda r: (r.get("cost_rank") is None, r.get("cost_rank") or 0, r["tokens_rank"]))
    else:
        rows = by_tokens
    rows = rows[:limit] if limit else rows
    notes = []
    if b1 < win.before[1]:
        notes.append("change is against the same stretch of the period before, up to this time")
    others = sorted(c for c in priced if c != cur)
    if others:
        notes.append(f"costs are in {cur}; costs charged in {', '.join(others)} are not in these figures")
    cols = [
        "tokens_rank",
        "cost_rank",
        by,
        "requests",
        "total_tokens",
        "tokens_share_pct",
        "tokens_change_pct",
        "cost",
        "cost_share_pct",
        "cost_change_pct",
        "cost_micros",
        "currency",
        "previous_total_tokens",
        "previous_cost_micros",
    ]
    rows.append(
        {
            "row": "total",
            by: None,
            "requests": sum(g["requests"] for g in now.values()),
            "total_tokens": total_tokens,
            "cost": format_money(total_cost, cur),
            "cost_micros": total_cost,
            "currency": cur if total_cost is not None else None,
            "previous_total_tokens": sum(g["total_tokens"] for g in was.values()),
        }
    )
    title = f"Top {by}s by {rank}, {win.label}"
    return Table(title, cols, rows, notes, frozenset({"cost_micros", "previous_cost_micros"}))


def _by_currency(rep: Report, by: str) -> dict[Any, dict]:
    """Rows of a (by, currency) report folded per group: requests and tokens over every
    currency, and (priced requests, cost) per currency."""
    out: dict[Any, dict] = {}
    for r in rep.rows:
        g = out.setdefault(r[by], {"requests": 0, "total_tokens": 0, "costs": {}})
        g["requests"] += r["requests"]
        g["total_tokens"] += r["total_tokens"]
        if r["currency"] is not None and r["cost_micros"] is not None:
            g["costs"][r["currency"]] = (r["requests"] - r["unpriced_requests"], r["cost_micros"])
    return out


# peaks ------------------------------------------------------------------------------------------
def peaks(
    store: Store, win: Window, filters: Mapping[str, Sequence[str]] | None = None, metric: str = "tokens"
) -> Table:
    """Each day's busiest hour (local time) by tokens or requests, with its share of the day."""
    if metric not in ("tokens", "requests"):
        raise ValueError("peaks by tokens or requests")
    field_ = "total_tokens" if metric == "tokens" else "requests"
    rep = run_report(store, _query(win, ("day", "hour"), filters))
    days: dict[str, list[dict]] = {}
    for r in rep.rows:
        days.setdefault(r["day"], []).append(r)
    rows = []
    for day in sorted(days):
        hours = days[day]
        best = max(hours, key=lambda r: (r[field_], r["requests"], -r["hour"]))
        day_total = sum(h[field_] for h in hours)
        rows.append(
            {
                "day": day,
                "peak_hour": f"{best['hour']:02d}:00-{(best['hour'] + 1) % 24:02d}:00",
                "hour": best["hour"],
                "requests": best["requests"],
                "total_tokens": best["total_tokens"],
                "share_of_day_pct": _pct(best[field_], day_total),
                "day_requests": sum(h["requests"] for h in hours),
                "day_tokens": sum(h["total_tokens"] for h in hours),
                "p95_duration_ms": best["p95_duration_ms"],
            }
        )
    cols = [
        "day",
        "peak_hour",
        "requests",
        "total_tokens",
        "share_of_day_pct",
        "day_requests",
        "day_tokens",
        "p95_duration_ms",
        "hour",
    ]
    return Table(f"Peak hour of each day by {metric}, {win.label} ({win.tz})", cols, rows)


# models -----------------------------------------------------------------------------------------
def models(store: Store, win: Window, filters: Mapping[str, Sequence[str]] | None = None) -> Table:
    """Per model (and currency): tokens, cost, cost per 1k tokens and per request, latency. An
    unpriced model's records form their own row with no cost, never a zero."""
    rep = run_report(store, _query(win, ("model", "currency"), filters, sort="cost_micros"))
    rows = []
    for r in rep.rows:
        cost, tokens, n = r["cost_micros"], r["total_tokens"], r["requests"]
        per_1k = _ratio(cost * 1000, tokens) if cost is not None else None
        per_req = _ratio(cost, n) if cost is not None else None
        rows.append(
            {
                "model": r["model"],
                "requests": n,
                "prompt_tokens": r["prompt_tokens"],
                "completion_tokens": r["completion_tokens"],
                "total_tokens": tokens,
                "cost": format_money(cost, r["currency"]),
                "cost_per_1k_tokens": format_money(per_1k, r["currency"]),
                "cost_per_request": format_money(per_req, r["currency"]),
                "cost_micros": cost,
                "cost_per_1k_micros": per_1k,
                "cost_per_request_micros": per_req,
                "currency": r["currency"],
                "unpriced_requests": r["unpriced_requests"],
                "avg_duration_ms": r["avg_duration_ms"],
                "p95_duration_ms": r["p95_duration_ms"],
                "errors": r["errors"],
            }
        )
    cols = list(rows[0]) if rows else ["model", "requests", "total_tokens", "cost", "cost_per_1k_tokens"]
    notes = []
    if any(r["cost_micros"] is None for r in rows):
        notes.append("models without a price show no cost: set one with `tokenabacus prices set`")
    money = frozenset({"cost_micros", "cost_per_1k_micros", "cost_per_request_micros"})
    return Table(f"Cost per model, {win.label}", cols, rows, notes, money)


def _ratio(num: int, den: int) -> int | None:
    """num / den in integer micros, rounded half up; None for nothing to divide by."""
    if not den:
        return None
    q, r = divmod(num, den)
    return q + (1 if 2 * r >= den else 0)


# drift ------------------------------------------------------------------------------------------
def drift(
    store: Store, win: Window, filters: Mapping[str, Sequence[str]] | None = None, only_differences: bool = False
) -> Table:
    """Our count against the upstream's per model and day, over the records that kept both
    (billed from our tokenizer with upstream figures beside it), and the upstream claims capped at
    what their request could use (billed below the claim)."""
    rep = run_report(store, _query(win, ("model", "day"), filters, drift=True, latency=False))
    rows = []
    for r in rep.rows:
        n = r["compared_requests"]
        if only_differences and not r["mismatched_requests"]:
            continue
        ours = r["compared_prompt_tokens"] + r["compared_completion_tokens"]
        theirs = r["upstream_prompt_tokens"] + r["upstream_completion_tokens"]
        rows.append(
            {
                "model": r["model"],
                "day": r["day"],
                "requests": r["requests"],
                "compared_requests": n,
                "mismatched_requests": r["mismatched_requests"],
                "our_prompt_tokens": r["compared_prompt_tokens"],
                "upstream_prompt_tokens": r["upstream_prompt_tokens"],
                "prompt_difference": r["compared_prompt_tokens"] - r["upstream_prompt_tokens"],
                "our_completion_tokens": r["compared_completion_tokens"],
                "upstream_completion_tokens": r["upstream_completion_tokens"],
                "completion_difference": r["compared_completion_tokens"] - r["upstream_completion_tokens"],
                "difference_pct": _pct(ours - theirs, theirs) if n else None,
            }
        )
    cols = list(rows[0]) if rows else ["model", "day", "compared_requests", "mismatched_requests", "difference_pct"]
    notes = [
        "compared: records billed from our tokenizer that also carried the upstream's usage, and records whose "
        "upstream claimed more than the request could use (max_tokens x n; with no tokenizer, the prompt's size), "
        "billed at that bound; other records billed from the upstream's figures kept no count of ours"
    ]
    return Table(f"Our count against the upstream's, {win.label} ({win.tz})", cols, rows, notes)


# suspicious -------------------------------------------------------------------------------------
def suspicious(
    store: Store,
    win: Window,
    by: str = "key_id",
    filters: Mapping[str, Sequence[str]] | None = None,
    factor: float = 5.0,
    min_requests_per_minute: int = 30,
    min_tokens_per_minute: int = 50_000,
    baseline_days: int = 7,
) -> Table:
    """Callers whose busiest minute in the window was ``factor`` times or more their own usual
    rate (per active minute over the ``baseline_days`` before the window) and above a minimum, in
    requests or in tokens. A caller with no history is judged by the minimum times ``factor``."""
    check_dimension(by, CALLERS)
    if factor <= 1:
        raise ValueError("--factor must be above 1")
    if baseline_days < 1:
        raise ValueError("--baseline-days must be at least 1")
    col = raw.c[by]
    minute = raw.c.timestamp - raw.c.timestamp % literal_column(str(MINUTE_MS))
    tokens = func.coalesce(func.sum(raw.c.total_tokens), 0)

    def where(a: int, b: int) -> list:
        conds = [raw.c.timestamp >= a, raw.c.timestamp < b, col.is_not(None)]
        conds += [raw.c[d].in_(list(v)) for d, v in (filters or {}).items()]
        return conds

    base_from = win.since_ms - baseline_days * DAY_MS
    per_minute = (
        select(col, minute, func.count(), tokens).where(*where(win.since_ms, win.until_ms)).group_by(col, minute)
    )
    baseline = (
        select(col, func.count(), tokens, func.count(func.distinct(minute)))
        .where(*where(base_from, win.since_ms))
        .group_by(col)
    )
    who = select(col, func.max(raw.c.user), func.max(raw.c.project), func.max(raw.c.department))
    with store.db.connect() as conn:
        # caller: (requests peak, its minute, tokens peak, its minute, active minutes)
        peak: dict[str, tuple[int, int, int, int, int]] = {}
        for caller, at, n, tok in conn.execute(per_minute):
            at, n, tok = int(at), int(n), int(tok)
            p = peak.get(caller)
            if p is None:
                peak[caller] = (n, at, tok, at, 1)
                continue
            rn, rat, tn, tat, active = p
            if (n, -at) > (rn, -rat):
                rn, rat = n, at
            if (tok, -at) > (tn, -tat):
                tn, tat = tok, at
            peak[caller] = (rn, rat, tn, tat, active + 1)
        usual = {c: (int(n), int(tok), int(m)) for c, n, tok, m in conn.execute(baseline)}
        flagged: list[dict] = []
        for caller, (rn, rat, tn, tat, active) in peak.items():
            base = usual.get(caller)
            base_rpm = base[0] / base[2] if base and base[2] else None
            base_tpm = base[1] / base[2] if base and base[2] else None
            reasons, on = [], []
            if _bursts(rn, base_rpm, factor, min_requests_per_minute):
                reasons.append(_reason("requests", rn, base_rpm, factor))
                on.append("requests")
            if _bursts(tn, base_tpm, factor, min_tokens_per_minute):
                reasons.append(_reason("tokens", tn, base_tpm, factor))
                on.append("tokens")
            if reasons:
                flagged.append(
                    {
                        by: caller,
                        "reason": "; ".join(reasons),
                        "flagged_on": ",".join(on),  # the figures the reason is about, for other languages
                        "peak_requests_per_minute": rn,
                        "peak_requests_at": _local_minute(rat, win.tz),
                        "baseline_requests_per_minute": None if base_rpm is None else round(base_rpm, 2),
                        "requests_ratio": None if not base_rpm else round(rn / base_rpm, 1),
                        "peak_tokens_per_minute": tn,
                        "peak_tokens_at": _local_minute(tat, win.tz),
                        "baseline_tokens_per_minute": None if base_tpm is None else round(base_tpm, 1),
                        "tokens_ratio": None if not base_tpm else round(tn / base_tpm, 1),
                        "active_minutes": active,
                    }
                )
        if flagged:
            names = [r[by] for r in flagged]
            found = conn.execute(who.where(col.in_(names), *where(win.since_ms, win.until_ms)).group_by(col))
            ids = {c: (u, p, d) for c, u, p, d in found}
            for r in flagged:
                u, p, d = ids.get(r[by], (None, None, None))
                r.update({"user": u, "project": p, "department": d} if by == "key_id" else {})
    flagged.sort(key=lambda r: -max(r["requests_ratio"] or 0, r["tokens_ratio"] or 0, 0))
    cols = [by, *(["user", "project", "department"] if by == "key_id" else []), "reason", "flagged_on"]
    cols += [
        "peak_requests_per_minute",
        "peak_requests_at",
        "baseline_requests_per_minute",
        "requests_ratio",
        "peak_tokens_per_minute",
        "peak_tokens_at",
        "baseline_tokens_per_minute",
        "tokens_ratio",
        "active_minutes",
    ]
    notes = [
        f"baseline: each caller's mean per active minute over the {baseline_days} days before {win.label}; "
        f"flagged at {factor:g}x it and at least {min_requests_per_minute} requests or "
        f"{min_tokens_per_minute:,} tokens a minute"
    ]
    return Table(f"Suspicious bursts by {by}, {win.label} ({win.tz})", cols, flagged, notes)


def _bursts(peak: int, base: float | None, factor: float, minimum: int) -> bool:
    if base is None:  # no history: a burst only well above the floor
        return peak >= minimum * factor
    return peak >= minimum and peak >= factor * base


def _reason(what: str, peak: int, base: float | None, factor: float) -> str:
    if base is None:
        return f"{peak:,} {what}/min with no history"
    return f"{peak:,} {what}/min = {peak / base:.1f}x its usual {base:,.1f}"


def _local_minute(ms: int, tz: str) -> str:
    return datetime.fromtimestamp(ms / 1000, zone_named(tz)).strftime("%Y-%m-%d %H:%M")

"""The rankings finance and the platform team ask for, each one report over a window: this
period's ranking (``top``), each day's peak hour (``peaks``), cost per model and per 1k tokens
(``models``) and our count against the upstream's (``drift``). Each is ``run_report`` (the
rollups) reshaped into a ``Table``. Callers bursting above their baseline are in
billing/suspicious.py, the month's chargeback in billing/chargeback.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from tokenabacus import calendar
from tokenabacus.billing.reports import DIMENSIONS, Report, ReportQuery, run_report
from tokenabacus.billing.table import Table
from tokenabacus.billing.windows import Window
from tokenabacus.ledger.store import Store
from tokenabacus.money import format_money


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
    for r in _refusals_folded(rep.rows):
        cost, tokens, n = r["cost_micros"], r["total_tokens"], r["requests"]
        per_1k = _ratio(cost * 1000, tokens) if cost is not None else None
        per_req = _ratio(cost, n - r.get("refused", 0)) if cost is not None else None  # per charged request
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


def _refusals_folded(rows: list[dict]) -> list[dict]:
    """A priced model's requests that used no tokens (refused, failed before any output) cost
    nothing to charge: they are requests (and errors) of its priced row, not a row of their own."""
    priced = {r["model"]: r for r in rows if r["currency"] is not None}
    out = []
    for r in rows:
        home = priced.get(r["model"])
        if r["currency"] is None and not r["total_tokens"] and home is not None:
            home["requests"] += r["requests"]
            home["errors"] += r["errors"]
            home["refused"] = home.get("refused", 0) + r["requests"]
            continue
        out.append(r)
    return out


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

"""At a glance: today's and this month's requests, tokens, cost and error rate so far, each beside
the same stretch of the period before (yesterday up to this time of day; last month up to this
day and hour), so a morning is never compared with a whole day. From ``run_report``, like every
other figure."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from tokenabacus.billing.reports import ReportQuery, run_report
from tokenabacus.billing.windows import window
from tokenabacus.ledger.store import Store


def figures(store: Store, since_ms: int, until_ms: int, tz: str, filters: Mapping[str, Sequence[str]]) -> dict:
    """Requests, tokens, errors and the cost per currency charged in [since, until)."""
    flt = tuple(sorted((k, tuple(v)) for k, v in filters.items()))
    rep = run_report(store, ReportQuery(("currency",), since_ms, until_ms, tz, flt, latency=False))
    t = rep.total
    return {
        "since_ms": since_ms,
        "until_ms": until_ms,
        "requests": t["requests"],
        "prompt_tokens": t["prompt_tokens"],
        "completion_tokens": t["completion_tokens"],
        "total_tokens": t["total_tokens"],
        "errors": t["errors"],
        "error_rate": round(t["errors"] / t["requests"], 6) if t["requests"] else None,
        "costs": [
            {"currency": r["currency"], "cost_micros": r["cost_micros"]}
            for r in rep.rows
            if r["currency"] and r["cost_micros"] is not None
        ],
        "unpriced_requests": t["unpriced_requests"],
    }


def overview(
    store: Store, tz: str, filters: Mapping[str, Sequence[str]] | None = None, now_ms: int | None = None
) -> dict[str, Any]:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out: dict[str, Any] = {"tz": tz, "now_ms": now}
    for period in ("today", "month"):
        win = window(tz, period, now_ms=now)
        elapsed = now - win.since_ms
        before_start, before_end = win.before
        out[period] = {
            "label": win.label,
            "current": figures(store, win.since_ms, now, tz, filters or {}),
            # The same stretch of the period before, never past its end (a 31st against February).
            "previous": figures(store, before_start, min(before_start + elapsed, before_end), tz, filters or {}),
        }
    return out

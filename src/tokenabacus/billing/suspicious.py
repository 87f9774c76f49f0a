"""Callers bursting far above their own baseline: each caller's busiest minute in a window against
its usual rate per active minute over the days before. Minutes are finer than any rollup, so this
reads the ledger's per-minute activity (ledger/activity.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from tokenabacus.billing.arguments import Arg, ArgumentError
from tokenabacus.billing.rankings import check_dimension
from tokenabacus.billing.table import Table
from tokenabacus.billing.windows import Window
from tokenabacus.calendar import DAY_MS, zone_named
from tokenabacus.ledger import activity
from tokenabacus.ledger.store import Store

CALLERS = ("key_id", "user", "project", "department", "client_ip")


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
        raise ArgumentError(Arg("factor"), " must be above 1")
    if baseline_days < 1:
        raise ArgumentError(Arg("baseline_days"), " must be at least 1")
    # caller: (requests peak, its minute, tokens peak, its minute, active minutes)
    peak: dict[str, tuple[int, int, int, int, int]] = {}
    for m in activity.per_minute_by_caller(store.db, by, win.since_ms, win.until_ms, filters):
        caller, at, n, tok = m.caller, m.at_ms, m.requests, m.tokens
        seen = peak.get(caller)
        if seen is None:
            peak[caller] = (n, at, tok, at, 1)
            continue
        rn, rat, tn, tat, active = seen
        if (n, -at) > (rn, -rat):
            rn, rat = n, at
        if (tok, -at) > (tn, -tat):
            tn, tat = tok, at
        peak[caller] = (rn, rat, tn, tat, active + 1)
    base_from = win.since_ms - baseline_days * DAY_MS
    usual = activity.usual_by_caller(store.db, by, base_from, win.since_ms, filters)
    flagged: list[dict] = []
    for caller, (rn, rat, tn, tat, active) in peak.items():
        base = usual.get(caller)
        base_rpm = base.requests / base.active_minutes if base and base.active_minutes else None
        base_tpm = base.tokens / base.active_minutes if base and base.active_minutes else None
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
        ids = activity.owners(store.db, by, [r[by] for r in flagged], win.since_ms, win.until_ms, filters)
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

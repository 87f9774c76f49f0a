"""Detectors: each rule kind judged against the ledger, answering what fires now. They read the
same code as `tokenabacus report`: the rollups for days, the ledger's per-minute activity
(ledger/activity.py, as the suspicious report does) for minutes. They return ``Firing``s;
deduplication, cool-down and delivery are the engine's (alerts/engine.py).

``period`` is what makes an alert once-only: a spike fires once per scope and day, a quota
threshold once per limit, threshold and period, a burst once per caller and minute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tokenabacus.billing.reports import ReportQuery, run_report
from tokenabacus.calendar import HOUR_MS, MINUTE_MS, day_start, midnight_ms, zone_named
from tokenabacus.config.alerts import (
    BurstRule,
    DriftRule,
    ErrorRateRule,
    QuotaRule,
    SpikeRule,
    UpstreamDownRule,
)
from tokenabacus.ledger import activity
from tokenabacus.ledger.record import ERROR
from tokenabacus.ledger.store import Store


@dataclass(frozen=True)
class Firing:
    rule: str
    kind: str
    scope: str  # e.g. "department=marketing", "key_id=key_ab12", "model=qwen-7b"
    period: str  # once per (rule, scope, period)
    figure: float
    baseline: float | None
    threshold: float
    unit: str  # tokens, requests, %, tokens/min ...
    detail: dict[str, Any]


def spikes(store: Store, rule: SpikeRule, tz: str, now_ms: int) -> list[Firing]:
    """Today's usage per scope against its trailing daily mean: fires when today so far, or today
    projected to its end (once ``project_after_hours`` have passed), reaches ``factor_pct``."""
    zone = zone_named(tz)
    start, local = day_start(now_ms, zone)
    day0 = local.date() - timedelta(days=rule.baseline_days)
    base_start = midnight_ms(day0, zone)
    today = {r[rule.scope]: r for r in run_report(store, ReportQuery((rule.scope,), start, now_ms, tz)).rows}
    before = {r[rule.scope]: r for r in run_report(store, ReportQuery((rule.scope,), base_start, start, tz)).rows}
    elapsed_h = max((now_ms - start) / HOUR_MS, 1e-9)
    out = []
    for name, r in today.items():
        if name is None or r["total_tokens"] < rule.min_tokens or r["requests"] < rule.min_requests:
            continue
        b = before.get(name)
        figure = _metric(r, rule.metric)
        if figure is None:
            continue
        if rule.metric == "tokens_per_request":
            base = _metric(b, rule.metric) if b else None
            projected = figure  # a size, not a volume: nothing to project
        else:
            base = (_metric(b, rule.metric) or 0) / rule.baseline_days if b else None
            projected = figure * 24 / elapsed_h
        if not base:  # no history: a new scope is not a spike of its own baseline
            continue
        limit = base * rule.factor_pct / 100
        by_projection = elapsed_h >= rule.project_after_hours and projected >= limit
        if figure >= limit or by_projection:
            out.append(
                Firing(
                    rule.name,
                    "spike",
                    f"{rule.scope}={name}",
                    local.date().isoformat(),
                    round(figure, 2),
                    round(base, 2),
                    rule.factor_pct,
                    rule.metric,
                    {
                        "projected": round(projected, 2),
                        "ratio_pct": round(100 * figure / base, 1),
                        "projected_ratio_pct": round(100 * projected / base, 1),
                        "baseline_days": rule.baseline_days,
                        "by_projection": figure < limit,
                    },
                )
            )
    return out


def _metric(r: Mapping[str, Any] | None, metric: str) -> float | None:
    if r is None:
        return None
    if metric == "tokens":
        return float(r["total_tokens"])
    if metric == "requests":
        return float(r["requests"])
    if metric == "cost":
        return None if r["cost_micros"] is None else r["cost_micros"] / 1e6
    billed = r["requests"] - r.get("rejected", 0)
    return r["prompt_tokens"] / billed if billed else None  # tokens_per_request: prompt size


def bursts(store: Store, rule: BurstRule, tz: str, now_ms: int) -> list[Firing]:
    """Per caller and minute over the last ``window_minutes``: fires for each minute above a
    threshold (once per caller and minute)."""
    since = now_ms - rule.window_minutes * MINUTE_MS
    zone = zone_named(tz)
    worst: dict[str, tuple[int, int, int]] = {}
    for m in activity.per_minute_by_caller(store.db, rule.by, since, now_ms):
        caller, at, n, tokens = m.caller, m.at_ms, m.requests, m.tokens
        over_r = rule.requests_per_minute is not None and n >= rule.requests_per_minute
        over_t = rule.tokens_per_minute is not None and tokens >= rule.tokens_per_minute
        if over_r or over_t:
            prev = worst.get(caller)
            if prev is None or (n, tokens) > prev[1:]:
                worst[caller] = (at, n, tokens)
    out = []
    for caller, (at, n, tokens) in worst.items():
        by_requests = rule.requests_per_minute is not None and n >= rule.requests_per_minute
        figure, threshold, unit = (
            (n, rule.requests_per_minute, "requests/min")
            if by_requests
            else (tokens, rule.tokens_per_minute, "tokens/min")
        )
        when = datetime.fromtimestamp(at / 1000, zone).strftime("%Y-%m-%d %H:%M")
        out.append(
            Firing(
                rule.name,
                "burst",
                f"{rule.by}={caller}",
                when[:10],  # once per caller and day: a burst lasting an hour pages once
                float(figure),
                None,
                float(threshold or 0),
                unit,
                {"minute": when, "requests": n, "tokens": tokens},
            )
        )
    return out


def drift(store: Store, rule: DriftRule, tz: str, now_ms: int) -> list[Firing]:
    """Today's count against the upstream's per model: fires past ``tolerance_pct``."""
    start, local = day_start(now_ms, zone_named(tz))
    rep = run_report(store, ReportQuery(("model",), start, now_ms, tz, drift=True))
    out = []
    for r in rep.rows:
        ours = r["compared_prompt_tokens"] + r["compared_completion_tokens"]
        theirs = r["upstream_prompt_tokens"] + r["upstream_completion_tokens"]
        if not theirs or max(ours, theirs) < rule.min_tokens:
            continue
        pct = 100 * abs(ours - theirs) / theirs
        if pct > rule.tolerance_pct:
            out.append(
                Firing(
                    rule.name,
                    "drift",
                    f"model={r['model']}",
                    local.date().isoformat(),
                    round(pct, 2),
                    None,
                    rule.tolerance_pct,
                    "%",
                    {"ours": ours, "upstream": theirs, "mismatched_requests": r["mismatched_requests"]},
                )
            )
    return out


def error_rates(store: Store, rule: ErrorRateRule, tz: str, now_ms: int) -> list[Firing]:
    """Errors among each model's requests over the last ``window_minutes`` (refusals are not
    errors: they are policy working)."""
    since = now_ms - rule.window_minutes * MINUTE_MS
    per: dict[str, list[int]] = {}
    for model, status, n in activity.requests_by_model_status(store.db, since, now_ms):
        acc = per.setdefault(model or "", [0, 0])
        acc[0] += n
        acc[1] += n if status == ERROR else 0
    out = []
    bucket = (now_ms // (rule.window_minutes * MINUTE_MS)) * rule.window_minutes * MINUTE_MS
    for model, (n, errors) in per.items():
        if n < rule.min_requests:
            continue
        pct = 100 * errors / n
        if pct >= rule.max_pct:
            out.append(
                Firing(
                    rule.name,
                    "error_rate",
                    f"model={model}",
                    str(bucket),
                    round(pct, 1),
                    None,
                    rule.max_pct,
                    "%",
                    {"requests": n, "errors": errors, "window_minutes": rule.window_minutes},
                )
            )
    return out


def quotas(status_rows: list[dict], rule: QuotaRule) -> list[Firing]:
    """Each limit's use against the rule's thresholds: the highest one reached fires, once per
    limit, threshold and period (status rows as governance.quotaview.status gives them)."""
    out = []
    for s in status_rows:
        limit = s.get("effective_limit") or s.get("limit")
        if not limit:
            continue
        pct = 100 * (s.get("used") or 0) / limit
        reached = [t for t in rule.thresholds if pct >= t]
        if not reached:
            continue
        t = reached[-1]
        scope = f"{s['scope']}={s.get('name') or '*'}" + (f" model={s['model']}" if s.get("model") else "")
        out.append(
            Firing(
                rule.name,
                "quota",
                f"{scope} {s['metric']}/{s['period']}",
                f"{s.get('period_start', '')}@{t:g}",
                round(pct, 1),
                None,
                t,
                "%",
                {"used": s.get("used"), "limit": limit, "metric": s["metric"], "resets": s.get("resets_at")},
            )
        )
    return out


def upstream_down(
    ready: Mapping[str, bool], down_since: dict[str, int], rule: UpstreamDownRule, now_ms: int
) -> list[Firing]:
    """Models whose engine has not been ready for ``for_seconds``; ``down_since`` is kept by the
    caller between evaluations."""
    out = []
    for model, ok in ready.items():
        if ok:
            down_since.pop(model, None)
            continue
        since = down_since.setdefault(model, now_ms)
        if now_ms - since >= rule.for_seconds * 1000:
            out.append(
                Firing(
                    rule.name,
                    "upstream_down",
                    f"model={model}",
                    str(since),
                    (now_ms - since) / 1000,
                    None,
                    rule.for_seconds,
                    "s",
                    {"down_since_ms": since},
                )  # fmt: skip
            )
    return out


Detector = Callable[[Store, Any, str, int], list[Firing]]
DETECTORS: dict[str, Detector] = {"spike": spikes, "burst": bursts, "drift": drift, "error_rate": error_rates}

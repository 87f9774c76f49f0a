"""A month's chargeback per department, ready for finance: each department's cost by project,
user and model with sub-totals, the cost adjustments booked in the month, the price versions
that charged it, and the hardware pools' cost apportioned beside it.

Figures come from ``run_report`` (rollups, equal to the raw records), so the records' grand total
per currency is the ledger's sum of ``cost_micros`` for the month to the micro-unit; the amount
due adds the month's adjustments, listed one by one. Costs in different currencies are never
added together: every total is per currency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

from tokenabacus.billing.prices import PriceVersion
from tokenabacus.billing.reports import ReportQuery, run_report
from tokenabacus.billing.windows import Window, window
from tokenabacus.calendar import zone_named
from tokenabacus.ledger.store import Store
from tokenabacus.money import format_money, format_rate

DETAIL = ("project", "user", "model")
FIGURES = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")
NONE = "(none)"  # how a missing department, project or user is shown
# The flat table's columns (CSV and the terminal): money as amounts and as exact micros.
COLUMNS = ["row", "department", *DETAIL, *FIGURES, "cost", "adjustments", "hardware", "amount_due", "currency"]
COLUMNS += ["unpriced_requests", "cost_micros", "adjustments_micros", "hardware_micros", "amount_due_micros"]


@dataclass
class Chargeback:
    month: str
    tz: str
    window: Window
    summary: list[dict]  # per (department, currency), then a total row per currency
    departments: dict[str, list[dict]]  # department: its rows, project sub-totals, its totals
    versions: list[dict]  # the price versions that charged the month's records
    adjustments: list[dict]
    hardware: list[dict]
    totals: list[dict]  # per currency: records' cost, adjustments, hardware, amount due
    unpriced_requests: int
    notes: list[str] = field(default_factory=list)

    def flat(self) -> list[dict]:
        """Every department's rows, then the summary's totals: one table for CSV and JSON."""
        rows = [r for rows in self.departments.values() for r in rows]
        return rows + [{"row": "grand total", **t} for t in self.totals]

    def as_json(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "tz": self.tz,
            "since_ms": self.window.since_ms,
            "until_ms": self.window.until_ms,
            "summary": self.summary,
            "departments": self.departments,
            "price_versions": self.versions,
            "adjustments": self.adjustments,
            "hardware": self.hardware,
            "totals": self.totals,
            "unpriced_requests": self.unpriced_requests,
            "notes": self.notes,
        }


def _figures(rows: Iterable[dict]) -> dict[str, Any]:
    """Sums of a set of report rows in one currency (cost None when none of them was priced)."""
    rows = list(rows)
    costs = [r["cost_micros"] for r in rows if r["cost_micros"] is not None]
    out: dict[str, Any] = {f: sum(r[f] for r in rows) for f in FIGURES}
    out["cost_micros"] = sum(costs) if costs else None
    out["unpriced_requests"] = sum(r["unpriced_requests"] for r in rows)
    return out


def _currencies(rows: Iterable[dict]) -> list[str | None]:
    """The currencies of these rows, priced ones by name, then None (unpriced) if any."""
    found = {r["currency"] for r in rows}
    return [*sorted(c for c in found if c), *([None] if None in found else [])]


def _money(row: dict) -> dict:
    cur = row.get("currency")
    for k in ("cost", "adjustments", "hardware", "amount_due"):
        if f"{k}_micros" in row:
            row[k] = format_money(row[f"{k}_micros"], cur)
    return row


def chargeback(
    store: Store,
    month: str,
    tz: str,
    versions: Iterable[PriceVersion] = (),
    filters: Mapping[str, Sequence[str]] | None = None,
) -> Chargeback:
    """The chargeback of ``month`` (YYYY-MM, cut at midnight in ``tz``). ``versions``: the price
    book's versions, to show what each version id charged; ``filters`` scope it (a viewer's).
    A department's amount due is its records' cost, its adjustments and its hardware share."""
    win = window(tz, month=month)
    flt = tuple(sorted((k, tuple(v)) for k, v in (filters or {}).items()))
    # One scan, also split by price version: the detail rows and the versions table both come
    # from it (a second scan for the versions doubled the time at 10M records).
    q = ReportQuery(
        by=("department", "currency", *DETAIL, "price_version"),
        since_ms=win.since_ms,
        until_ms=win.until_ms,
        tz=tz,
        filters=flt,
        latency=False,
        subtotals=False,
    )
    rep = run_report(store, q)
    by_version = rep.rows
    rows_all = _merged(by_version, ("department", "currency", *DETAIL), ordered=False)  # sorted below
    for r in rows_all:
        r["department"] = r["department"] or NONE
    rows_all = _fold_tokenless(rows_all)
    adjustments = _adjustments(store, win, filters)
    hardware = _hardware(store, month, tz, filters)
    # Departments ranked by their cost (the largest currency sum first), then name.
    by_dept: dict[str, list[dict]] = {}
    for r in rows_all:
        by_dept.setdefault(r["department"], []).append(r)
    for a in [*adjustments, *hardware]:
        by_dept.setdefault(a["department"] or NONE, [])

    def weight(d: str) -> tuple:
        return (-max((r["cost_micros"] or 0 for r in by_dept[d]), default=0), d)

    departments: dict[str, list[dict]] = {}
    summary: list[dict] = []
    for dept in sorted(by_dept, key=weight):
        rows = by_dept[dept]
        adj = [a for a in adjustments if (a["department"] or NONE) == dept]
        hw = [h for h in hardware if (h["department"] or NONE) == dept]
        out: list[dict] = []
        for project in sorted({r["project"] or NONE for r in rows}):
            members = sorted(
                (r for r in rows if (r["project"] or NONE) == project),
                key=lambda r: (r["user"] or "", r["model"] or "", r["currency"] or ""),
            )
            for r in members:
                out.append(
                    _money(
                        {
                            "row": "group",
                            "department": dept,
                            "project": project,
                            "user": r["user"] or NONE,
                            "model": r["model"],
                            **{f: r[f] for f in FIGURES},
                            "cost_micros": r["cost_micros"],
                            "currency": r["currency"],
                            "unpriced_requests": r["unpriced_requests"],
                        }
                    )
                )
            for cur in _currencies(members):
                sub = _figures(r for r in members if r["currency"] == cur)
                out.append(_money({"row": "subtotal", "department": dept, "project": project, **sub, "currency": cur}))
        other_currencies = {a["currency"] for a in [*adj, *hw]}
        for cur in _currencies([*rows, *({"currency": c} for c in other_currencies)]):
            figs = _figures(r for r in rows if r["currency"] == cur)
            adj_sum = sum(a["amount_micros"] for a in adj if a["currency"] == cur)
            hw_sum = sum(h["cost_micros"] for h in hw if h["currency"] == cur)
            line = {
                "department": dept,
                **figs,
                "currency": cur,
                "adjustments_micros": adj_sum if cur else None,
                "hardware_micros": hw_sum if cur else None,
                # Unpriced records (no currency) owe nothing known: no amount, not zero.
                "amount_due_micros": (figs["cost_micros"] or 0) + adj_sum + hw_sum if cur else None,
            }
            out.append(_money({"row": "total", "project": None, "user": None, "model": None, **line}))
            summary.append(_money({"row": "group", **line}))
        departments[dept] = out
    totals = _totals(summary)
    return Chargeback(
        month=month,
        tz=tz,
        window=win,
        summary=summary + [{"row": "total", "department": None, **t} for t in totals],
        departments=departments,
        versions=_versions(_merged(by_version, ("model", "price_version")), versions, tz),
        adjustments=adjustments,
        hardware=hardware,
        totals=totals,
        unpriced_requests=sum(t["unpriced_requests"] for t in totals),
        notes=_notes(sum(t["unpriced_requests"] for t in totals), totals, filters),
    )


def _tokenless(r: dict) -> bool:
    return r["currency"] is None and not r["total_tokens"] and not r["cached_tokens"]


def _fold_tokenless(rows: list[dict]) -> list[dict]:
    """Requests to a priced model that used no tokens (refused, failed before any output) cost
    nothing because there was nothing to charge, not because no price was in force: they count
    as requests of their priced group (same department, project, user and model), or of the
    department's one currency, never as a group of their own or as unpriced."""
    home: dict[tuple, dict] = {}
    currencies: dict[str, set[str]] = {}
    priced = {r["model"] for r in rows if r["currency"] is not None}
    for r in rows:
        if r["currency"] is not None:
            home.setdefault((r["department"], *(r[d] for d in DETAIL)), r)
            currencies.setdefault(r["department"], set()).add(r["currency"])
    out = []
    for r in rows:
        if _tokenless(r) and r["model"] in priced:  # a model with no price at all stays unpriced
            sibling = home.get((r["department"], *(r[d] for d in DETAIL)))
            if sibling is not None:
                sibling["requests"] += r["requests"]
                continue
            own = currencies.get(r["department"], set())
            r = {**r, "unpriced_requests": 0, "currency": next(iter(own)) if len(own) == 1 else None}
        out.append(r)
    return out


def _totals(summary: list[dict]) -> list[dict]:
    """The grand total per currency; unpriced records' tokens in a row of their own."""
    out = []
    for cur in _currencies(summary):
        mine = [s for s in summary if s["currency"] == cur]
        figs = {f: sum(s[f] for s in mine) for f in FIGURES}
        cost = sum(s["cost_micros"] or 0 for s in mine) if cur else None
        adj = sum(s["adjustments_micros"] or 0 for s in mine) if cur else None
        hw = sum(s["hardware_micros"] or 0 for s in mine) if cur else None
        due = cost + adj + hw if cost is not None and adj is not None and hw is not None else None
        out.append(
            _money(
                {
                    **figs,
                    "cost_micros": cost,
                    "currency": cur,
                    "adjustments_micros": adj,
                    "hardware_micros": hw,
                    "amount_due_micros": due,
                    "unpriced_requests": sum(s["unpriced_requests"] for s in mine),
                }
            )
        )
    return out


def _adjustments(store: Store, win: Window, filters: Mapping[str, Sequence[str]] | None) -> list[dict]:
    zone = zone_named(win.tz)
    out = []
    for a in store.prices.adjustments(win.since_ms, win.until_ms):
        if any(a.get(d) not in values for d, values in (filters or {}).items() if d in a):
            continue
        out.append(
            {
                # Plain str keys: a column named like a reserved word ("user") comes back as a
                # str subclass that JSON writers refuse as a key.
                **{str(k): v for k, v in a.items()},
                "at_local": datetime.fromtimestamp(a["at"] / 1000, zone).isoformat(timespec="seconds"),
                "amount": format_money(a["amount_micros"], a["currency"]),
            }
        )
    return out


def _hardware(store: Store, month: str, tz: str, filters: Mapping[str, Sequence[str]] | None) -> list[dict]:
    """The hardware pools' cost apportioned to departments and projects; a scope by department
    or project keeps its own shares, any other scope (a user, a model) has no share to show."""
    from tokenabacus.billing.hardware import apportion

    if filters and not set(filters) <= {"department", "project"}:
        return []
    rows = apportion(store, month, tz)
    return [h for h in rows if all(h.get(d) in values for d, values in (filters or {}).items())]


def _merged(rows: Iterable[dict], keys: Sequence[str], ordered: bool = True) -> list[dict]:
    """Report rows summed per ``keys`` (in key order when ``ordered``): the figures a chargeback
    shows. A group's cost is None only when none of its rows was priced; ``keys`` hold the
    currency, or the price version that fixes it, so a sum never crosses currencies."""
    out: dict[Any, dict] = {}
    key = itemgetter(*keys)
    for r in rows:
        k = key(r)
        acc = out.get(k)
        if acc is None:
            out[k] = dict(r)
            continue
        for f in FIGURES:
            acc[f] += r[f]
        acc["unpriced_requests"] += r["unpriced_requests"]
        if r["cost_micros"] is not None:
            acc["cost_micros"] = (acc["cost_micros"] or 0) + r["cost_micros"]
            acc["currency"] = acc["currency"] or r["currency"]
    if not ordered:
        return list(out.values())
    return [out[k] for k in sorted(out, key=lambda k: tuple((v is None, v or "") for v in k))]


def _versions(rows: Iterable[dict], versions: Iterable[PriceVersion], tz: str) -> list[dict]:
    """What each price version charged in the month, with its prices per 1M tokens."""
    known = {v.version_id: v for v in versions}
    zone = zone_named(tz)
    out = []
    for r in rows:
        vid = r["price_version"]
        if vid is None:
            continue
        v = known.get(vid)
        out.append(
            _money(
                {
                    "model": r["model"],
                    "price_version": vid,
                    "effective_from": None
                    if v is None
                    else datetime.fromtimestamp(v.effective_from / 1000, zone).isoformat(timespec="seconds"),
                    "input_per_1m": None if v is None else format_rate(v.input, "1m", v.currency),
                    "cached_per_1m": None if v is None or v.cached is None else format_rate(v.cached, "1m", v.currency),
                    "output_per_1m": None if v is None else format_rate(v.output, "1m", v.currency),
                    # The prices as exact micros per 1M tokens (the workbook's numeric cells)
                    "input_per_1m_micros": None if v is None else v.input,
                    "cached_per_1m_micros": None if v is None else v.cached,
                    "output_per_1m_micros": None if v is None else v.output,
                    "requests": r["requests"],
                    "total_tokens": r["total_tokens"],
                    "cost_micros": r["cost_micros"],
                    "currency": r["currency"],
                }
            )
        )
    return out


def _notes(unpriced: int, totals: list[dict], filters: Mapping[str, Sequence[str]] | None) -> list[str]:
    notes = []
    if unpriced:
        notes.append(f"{unpriced:,} requests had no price in force (no cost, not zero): see unpriced_requests")
    if len({t["currency"] for t in totals if t["currency"]}) > 1:
        notes.append("costs are in several currencies: every total is per currency")
    if filters:
        notes.append("scoped to " + ", ".join(f"{k}={'|'.join(v)}" for k, v in sorted(filters.items())))
    return notes

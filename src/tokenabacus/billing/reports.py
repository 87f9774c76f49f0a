"""Usage reports: requests, tokens, cost and latency grouped by any dimension and by day, week,
month or hour of day in a time zone, filtered by any dimension, with sub-totals and a grand
total. ``run_report`` is the one query the CLI and /admin/report share.

The ledger gives the figures per group (ledger/rollups/plan.py: whole hours from the rollups, the
rest from raw records, so every figure equals a computation over the raw records); this module
adds them up per group and shapes rows, sub-totals and labels. p95 comes from the rollups'
latency histogram (rollups.p95).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tokenabacus.calendar import HOUR_MS, zone_named
from tokenabacus.dates import check_day
from tokenabacus.ledger import rollups
from tokenabacus.ledger.record import CANCELLED, ERROR, OK, REJECTED
from tokenabacus.ledger.store import Store

DIMENSIONS = ("department", "project", "user", "key_id", "model", "status", "currency", "price_version")
TIME_DIMENSIONS = rollups.TIME_KEYS  # day, week (from Monday), month, hour (of day, 0-23)
GROUPS = DIMENSIONS + TIME_DIMENSIONS
STATUSES = (OK, ERROR, CANCELLED, REJECTED)
# The figures of every row, in output order. cost_micros sums the known costs (unpriced_requests
# had none); currency is that of the priced records, "mixed" (and no cost) when they differ.
COLUMNS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cost_micros",
    "currency",
    "unpriced_requests",
    "avg_duration_ms",
    "p95_duration_ms",
    "errors",
    "cancelled",
)
SORTABLE = tuple(c for c in COLUMNS if c != "currency")
MIXED = "mixed"
_EPOCH = datetime(1970, 1, 1)
_SUMS = len(rollups.SUMS)
_PRICED = rollups.FIGURES.index("priced_requests")
_DRIFT = tuple((c, rollups.FIGURES.index(c)) for c in rollups.DRIFT)
_BUCKETS = slice(rollups.FIGURES.index(rollups.LATENCY_COLUMNS[0]), _SUMS)
_MONEY = rollups.SUMS[: rollups.SUMS.index("priced_requests") + 1]  # requests, tokens, cost: every report's


@dataclass(frozen=True)
class ReportQuery:
    by: tuple[str, ...]
    since_ms: int | None = None  # UTC ms, inclusive
    until_ms: int | None = None  # UTC ms, exclusive
    tz: str = "UTC"  # days, weeks, months and hours of day are cut in this zone
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (dimension, values it may have)
    sort: str | None = None  # a figure: groups in descending order of it
    drift: bool = False  # rows also carry our count against the upstream's (rollups.DRIFT)
    latency: bool = True  # False: no avg or p95 duration (None), for reports that show none: a faster scan
    subtotals: bool = True  # False: no sub-totals (rows in key order), for callers that total themselves


@dataclass
class Report:
    query: ReportQuery
    rows: list[dict]  # one per group, in order (with sub-totals: each first-dimension value's run)
    subtotals: list[dict]  # one per first-dimension value when grouping by two or more
    total: dict  # the grand total
    from_rollups: bool = True  # False: the ledger predates rollups, every figure came from raw records
    columns: list[str] = field(default_factory=list)

    def flat(self, totals: bool = False) -> list[dict]:
        """The rows as printed: with ``totals``, each marked ``row`` (group, subtotal, total),
        every first-dimension run followed by its sub-total, and the grand total last."""
        if not totals:
            return self.rows
        if not self.query.by:  # the one row is the total
            return [{"row": "total", **self.total}]
        first = self.query.by[0]
        out: list[dict] = []
        rows = iter(self.rows)
        pending = next(rows, None)
        for sub in self.subtotals:
            while pending is not None and pending[first] == sub[first]:
                out.append({"row": "group", **pending})
                pending = next(rows, None)
            out.append({"row": "subtotal", **sub})
        while pending is not None:
            out.append({"row": "group", **pending})
            pending = next(rows, None)
        out.append({"row": "total", **self.total})
        return out


# Arguments -----------------------------------------------------------------------------------
def check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; choose from {', '.join(STATUSES)}")


def parse_when(text: str, zone, name: str) -> int:
    """A date or date-time (naive ones are in `zone`) as UTC epoch milliseconds."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} {text!r}: expected a date like 2026-11-01 or 2026-11-01T08:00") from None
    check_day(dt.date(), name, text)
    return int((dt if dt.tzinfo else dt.replace(tzinfo=zone)).timestamp() * 1000)


def parse_filters(items: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``dim=value`` strings (repeat a dimension for any of several values; ``dim=`` is a missing
    value) as filters."""
    out: dict[str, tuple[str, ...]] = {}
    for item in items:
        dim, sep, value = item.partition("=")
        dim = dim.strip()
        if not sep or not dim:
            raise ValueError(f"--filter {item!r}: expected DIMENSION=VALUE, e.g. department=marketing")
        out[dim] = (*out.get(dim, ()), value)
    return out


def build_query(
    by: tuple[str, ...],
    since: str | None,
    until: str | None,
    tz: str,
    status: str | None = None,
    filters: Mapping[str, Sequence[str]] | None = None,
    sort: str | None = None,
) -> ReportQuery:
    """Validate report arguments into a query; ValueError names the bad one."""
    bad = [d for d in by if d not in GROUPS]
    if bad:
        raise ValueError(f"cannot group by {', '.join(bad)}; choose from {', '.join(GROUPS)}")
    if len(set(by)) != len(by):
        raise ValueError(f"--by names a dimension twice: {', '.join(by)}")
    wanted = {k: tuple(v) for k, v in (filters or {}).items()}
    if status is not None:
        wanted["status"] = (*wanted.get("status", ()), status)
    for dim, values in wanted.items():
        if dim not in DIMENSIONS:
            raise ValueError(f"cannot filter by {dim!r}; choose from {', '.join(DIMENSIONS)}")
        if dim == "status":
            for v in values:
                check_status(v)
    if sort is not None and sort not in SORTABLE:
        raise ValueError(f"cannot sort by {sort!r}; choose from {', '.join(SORTABLE)}")
    zone = zone_named(tz)
    since_ms = parse_when(since, zone, "--since") if since else None
    until_ms = parse_when(until, zone, "--until") if until else None
    return ReportQuery(
        by=by,
        since_ms=since_ms,
        until_ms=until_ms,
        tz=tz,
        filters=tuple(sorted(wanted.items())),
        sort=sort,
    )


# The query -------------------------------------------------------------------------------------
class _Acc:
    """A group's figures (rollups.FIGURES order), its errors and cancellations, and the currencies
    of its priced records."""

    __slots__ = ("figures", "errors", "cancelled", "currencies", "idx")

    def __init__(self, idx: tuple[int, ...] = tuple(range(_SUMS))) -> None:
        self.idx = idx  # the figures summed: a report without durations skips the latency buckets
        self.figures = [0] * len(rollups.FIGURES)
        self.errors = 0
        self.cancelled = 0
        self.currencies: set[str] = set()

    def add(self, row: Sequence[Any], at: int) -> None:
        """Add a row of (..., status, currency, *FIGURES) whose status is at ``at``."""
        f = self.figures
        first = at + 2
        for i in self.idx:
            f[i] += row[first + i]
        if row[-1] > f[-1]:
            f[-1] = row[-1]
        status = row[at]
        if status == ERROR:
            self.errors += row[first]
        elif status == CANCELLED:
            self.cancelled += row[first]
        if row[first + _PRICED]:
            self.currencies.add(row[at + 1])

    def merge(self, other: _Acc) -> None:
        f = self.figures
        for i in self.idx:
            f[i] += other.figures[i]
        f[-1] = max(f[-1], other.figures[-1])
        self.errors += other.errors
        self.cancelled += other.cancelled
        self.currencies |= other.currencies

    def out(self, drift: bool = False, latency: bool = True) -> dict[str, Any]:
        requests, prompt, completion, total, cached, cost, priced, duration = self.figures[:8]
        buckets = self.figures[_BUCKETS] if latency else []
        timed = sum(buckets)
        currency: str | None
        if len(self.currencies) > 1:
            currency, cost_out = MIXED, None  # never a sum across currencies: group by currency
        else:
            currency = next(iter(self.currencies), None) or None
            cost_out = cost if priced else None
        return {
            "requests": requests,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
            "cached_tokens": cached,
            "cost_micros": cost_out,
            "currency": currency,
            "unpriced_requests": requests - priced,
            "avg_duration_ms": round(duration / timed, 1) if timed else None,
            "p95_duration_ms": rollups.p95(buckets, self.figures[-1]) if latency else None,
            "errors": self.errors,
            "cancelled": self.cancelled,
            **({c: self.figures[i] for c, i in _DRIFT} if drift else {}),
        }


def run_report(store: Store, q: ReportQuery) -> Report:
    """The report: the ledger's figures per group (whole UTC hours from the rollups unless a bucket
    boundary cuts them, the rest from raw records), merged per group; a ledger whose rollups are
    incomplete (older than them, never rebuilt) is read raw throughout."""
    only = _figures_read(q)
    idx = tuple(i for i, c in enumerate(rollups.SUMS) if c in only)
    found = rollups.usage_figures(store.db, q.by, q.since_ms, q.until_ms, zone_named(q.tz), dict(q.filters), only)
    groups: dict[tuple, _Acc] = {}
    width = len(q.by)
    for r in found.rows:
        key = tuple(r[:width])
        acc = groups.get(key)
        if acc is None:
            acc = groups[key] = _Acc(idx)
        acc.add(r, width)
    return _shape(q, groups, found.complete, idx)


def _figures_read(q: ReportQuery) -> set[str]:
    """The rollup figures a report shows: requests, tokens and cost always; our count against the
    upstream's for drift; the latency histogram and durations unless it shows none."""
    out = {*_MONEY, *(rollups.DRIFT if q.drift else ())}
    if q.latency:
        out |= {"duration_ms", *rollups.LATENCY_COLUMNS, "duration_max_ms"}
    return out


def _shape(q: ReportQuery, groups: dict[tuple, _Acc], complete: bool, idx: tuple[int, ...]) -> Report:
    """Rows in order, sub-totals by the first dimension, the grand total; labels for keys."""
    total = _Acc(idx)
    for acc in groups.values():
        total.merge(acc)
    none = dict.fromkeys(q.by)
    columns = [*q.by, *(c for c in COLUMNS if c not in q.by)]
    if not q.by:
        return Report(q, [total.out(q.drift, q.latency)], [], total.out(q.drift, q.latency), complete, columns)
    items = sorted(groups.items(), key=lambda kv: _order(kv[0], kv[1], q.sort))
    subtotals: list[dict] = []
    if len(q.by) >= 2 and q.subtotals:
        blocks: dict[Any, list[tuple[tuple, _Acc]]] = {}
        for key, acc in items:
            blocks.setdefault(key[0], []).append((key, acc))
        subs = {}
        for first, members in blocks.items():
            sub = subs[first] = _Acc(idx)
            for _, acc in members:
                sub.merge(acc)
        order = sorted(blocks, key=lambda k: _order((k,), subs[k], q.sort))
        items = [kv for first in order for kv in blocks[first]]
        subtotals = [
            {**none, q.by[0]: _label(q.by[0], first), **subs[first].out(q.drift, q.latency)} for first in order
        ]
    rows = []
    for key, acc in items:
        labels = {d: _label(d, v) for d, v in zip(q.by, key, strict=True)}
        rows.append({**labels, **acc.out(q.drift, q.latency), **labels})  # a currency group keeps its own name
    return Report(q, rows, subtotals, {**none, **total.out(q.drift, q.latency)}, complete, columns)


def _order(key: tuple, acc: _Acc, sort: str | None) -> tuple:
    if sort is None:
        return key
    v = acc.out()[sort]
    return (v is None, -(v or 0), key)


def _label(dim: str, v: Any) -> Any:
    """A group key as shown: a missing dimension is None, time buckets are local dates (the
    Monday of a week, YYYY-MM for a month) and hours of day 0-23."""
    if dim in DIMENSIONS:
        return v or None
    ms = int(v)
    if dim == "hour":
        return ms // HOUR_MS
    when = _EPOCH + timedelta(milliseconds=ms)
    return when.strftime("%Y-%m") if dim == "month" else when.strftime("%Y-%m-%d")

"""Usage reports: requests, tokens, cost and latency grouped by any dimension and by day, week,
month or hour of day in a time zone, filtered by any dimension, with sub-totals and a grand
total. ``run_report`` is the one query the CLI and /admin/report share.

Whole UTC hours are read from the hourly rollups (ledger/rollups.py); raw records only where an
hour is cut: the range's partial edges, and hours a local bucket boundary falls inside (a zone at
+05:45 starts its days at :15 past a UTC hour). Every figure therefore equals a computation over
the raw records; p95 comes from the rollups' latency histogram (rollups.p95).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import case
from sqlalchemy.sql.elements import ColumnElement

from tokenabacus.calendar import DAY_MS, HOUR_MS, zone_named
from tokenabacus.dates import check_day
from tokenabacus.ledger import rollups
from tokenabacus.ledger.record import CANCELLED, ERROR, OK, REJECTED
from tokenabacus.ledger.store import Store

DIMENSIONS = ("department", "project", "user", "key_id", "model", "status", "currency", "price_version")
TIME_DIMENSIONS = ("day", "week", "month", "hour")  # week starts on Monday; hour is the hour of day, 0-23
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
WEEK_MS = 7 * DAY_MS
MONDAY_SHIFT_MS = 3 * DAY_MS  # 1970-01-01 was a Thursday: shifted by 3 days, weeks start on Mondays
# More cut hours than this and one raw scan of the range is simpler than excluding each.
MAX_CUT_HOURS = 1000
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


@dataclass(frozen=True)
class _Plan:
    hours: tuple[int, int] | None  # [from, to) in whole UTC hours, read from the rollups
    cut: tuple[int, ...]  # hours inside ``hours`` read from raw records instead
    raw: tuple[tuple[int, int], ...]  # [from, to) windows read from raw records


def run_report(store: Store, q: ReportQuery) -> Report:
    """The report: whole UTC hours from the rollups (unless a bucket boundary cuts them), the
    rest from raw records, merged per group; a ledger whose rollups are incomplete (older than
    them, never rebuilt) is read raw throughout."""
    zone = zone_named(q.tz)
    db = store.db
    since, until = q.since_ms, q.until_ms
    groups: dict[tuple, _Acc] = {}
    only = _figures_read(q)
    idx = tuple(i for i, c in enumerate(rollups.SUMS) if c in only)
    complete = rollups.complete(db)
    # Open ends are the ledger's own first and last hour, and so is any end beyond them: the
    # days and months planned below are those holding records, not all of 1970 to 9998.
    span = rollups.span(db)
    if span is None:
        since = until = None
    else:
        first, last = span[0] - span[0] % HOUR_MS, span[1] - span[1] % HOUR_MS + HOUR_MS
        since = first if since is None else max(since, first)
        until = last if until is None else min(until, last)
    if since is not None and until is not None and since < until:
        offsets = _offsets(zone, since, until)
        keys = {d: None if d in DIMENSIONS else _time_key(d, offsets, _months(zone, since, until)) for d in q.by}
        plan = _plan(q.by, zone, since, until, offsets) if complete else _Plan(None, (), ((since, until),))
        filters = dict(q.filters)
        width = len(q.by)
        parts = []
        if plan.hours:
            hours, days = _days_within(plan, q.by, db)
            if hours:
                parts.append(rollups.aggregate(db, "rollups", keys, hours, filters, plan.cut, only))
            if days:
                parts.append(rollups.aggregate(db, "daily", keys, [days], filters, (), only))
        if plan.raw:
            parts.append(rollups.aggregate(db, "raw", keys, plan.raw, filters))
        for part in parts:
            for r in part:
                key = tuple(r[:width])
                acc = groups.get(key)
                if acc is None:
                    acc = groups[key] = _Acc(idx)
                acc.add(r, width)
    return _shape(q, groups, complete, idx)


def _days_within(plan: _Plan, by: Sequence[str], db: Any) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
    """The plan's whole hours split into whole UTC days, read from the daily rollups, and the
    hours at either end. Only for reports without time buckets (a local day or hour would cut a
    UTC day) and nothing cut inside, and once the daily rollups are complete."""
    assert plan.hours is not None
    a, b = plan.hours
    d0, d1 = -(-a // DAY_MS) * DAY_MS, b - b % DAY_MS
    if d1 - d0 < 2 * DAY_MS or plan.cut or set(by) & set(TIME_DIMENSIONS) or not rollups.daily_complete(db):
        return [plan.hours], None
    return [w for w in ((a, d0), (d1, b)) if w[0] < w[1]], (d0, d1)


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


# Time: offsets, buckets, and the hours a bucket boundary cuts -------------------------------------
def _offset_at(zone: tzinfo, ms: int) -> int:
    off = datetime.fromtimestamp(ms / 1000, zone).utcoffset()
    return int(off.total_seconds() * 1000) if off else 0


def _offsets(zone: tzinfo, since: int, until: int) -> list[tuple[int, int]]:
    """The zone's UTC offset over [since, until) as (from, offset) pieces, exact to the ms; found
    a day at a time (zones change offset at most once a day)."""
    out = [(since, _offset_at(zone, since))]
    points = [*range(since, until, DAY_MS), until - 1]
    prev = out[0][1]
    for a, b in zip(points, points[1:], strict=False):
        ob = _offset_at(zone, b)
        if ob != prev:
            lo, hi = a, b
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_at(zone, mid) == prev:
                    lo = mid
                else:
                    hi = mid
            out.append((hi, ob))
            prev = ob
    return out


def _local(t: ColumnElement[Any], offsets: list[tuple[int, int]]) -> ColumnElement[Any]:
    """Local wall time in ms since 1970-01-01 (local): UTC ms plus the offset in force."""
    i = rollups.sql_int
    if len(offsets) == 1:
        return t + i(offsets[0][1])
    whens = [(t < i(nxt), i(off)) for (_, off), (nxt, _) in zip(offsets, offsets[1:], strict=False)]
    return t + case(*whens, else_=i(offsets[-1][1]))


def _months(zone: tzinfo, since: int, until: int) -> list[int]:
    """Local month starts (local ms) from the month holding ``since`` to the one after ``until``."""
    d = datetime.fromtimestamp(since / 1000, zone).date().replace(day=1)
    end = datetime.fromtimestamp((until - 1) / 1000, zone).date()
    out = []
    while True:
        out.append((datetime(d.year, d.month, 1) - _EPOCH) // timedelta(milliseconds=1))
        if d > end:
            return out
        d = (d + timedelta(days=32)).replace(day=1)


def _time_key(dim: str, offsets: list[tuple[int, int]], months: list[int]) -> rollups.TimeKey:
    i = rollups.sql_int

    def key(t: ColumnElement[Any]) -> ColumnElement[Any]:
        loc = _local(t, offsets)
        if dim == "day":
            return loc - loc % i(DAY_MS)
        if dim == "week":
            return loc - (loc + i(MONDAY_SHIFT_MS)) % i(WEEK_MS)
        if dim == "hour":
            return loc % i(DAY_MS) - loc % i(HOUR_MS)
        # month: calendar months are not arithmetic, so the starts of the months in range
        return case(*[(loc < i(nxt), i(m)) for m, nxt in zip(months, months[1:], strict=False)], else_=i(months[-1]))

    return key


def _boundaries(dims: set[str], zone: tzinfo, lo: int, hi: int) -> Iterator[int]:
    """UTC ms of the local midnights in [lo, hi] that start a day, week or month in ``dims``."""
    d = datetime.fromtimestamp(lo / 1000, zone).date()
    last = datetime.fromtimestamp(hi / 1000, zone).date()
    while d <= last:
        if "day" in dims or ("week" in dims and d.weekday() == 0) or ("month" in dims and d.day == 1):
            yield int(datetime(d.year, d.month, d.day, tzinfo=zone).timestamp() * 1000)
        d += timedelta(days=1)


def _cut_hours(by: Sequence[str], zone: tzinfo, lo: int, hi: int, offsets: list[tuple[int, int]]) -> list[int] | None:
    """The UTC hours in [lo, hi) that some local bucket boundary cuts; None when every hour is
    (hours of day in a zone whose offset is not whole hours)."""
    dims = set(by) & set(TIME_DIMENSIONS)
    if not dims:
        return []
    if "hour" in dims and any(off % HOUR_MS for _, off in offsets):
        return None
    cuts = {at - at % HOUR_MS for at, _ in offsets[1:] if at % HOUR_MS}  # an offset change inside an hour
    cuts |= {b - b % HOUR_MS for b in _boundaries(dims, zone, lo, hi) if b % HOUR_MS}
    return sorted(h for h in cuts if lo <= h < hi)


def _plan(by: Sequence[str], zone: tzinfo, since: int, until: int, offsets: list[tuple[int, int]]) -> _Plan:
    lo = -(-since // HOUR_MS) * HOUR_MS
    hi = until - until % HOUR_MS
    if lo >= hi:
        return _Plan(None, (), ((since, until),))
    cut = _cut_hours(by, zone, lo, hi, offsets)
    if cut is None or len(cut) > MAX_CUT_HOURS:
        return _Plan(None, (), ((since, until),))
    raw = [(since, lo)] if since < lo else []
    raw += [(h, h + HOUR_MS) for h in cut]
    if hi < until:
        raw.append((hi, until))
    return _Plan((lo, hi), tuple(cut), tuple(_merged(raw)))


def _merged(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out

"""The read planner: which parts of a range come from the hourly rollups, the daily ones and the
raw records, so that every figure equals a computation over the raw records.

Whole UTC hours are read from the hourly rollups; raw records only where an hour is cut: the
range's partial edges, and hours a local bucket boundary falls inside (a zone at +05:45 starts its
days at :15 past a UTC hour). Without time buckets, whole UTC days come from the daily rollups. A
ledger whose rollups are incomplete (older than them, never rebuilt) is read raw throughout.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from tokenabacus.calendar import DAY_MS, HOUR_MS
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.rollups import reads
from tokenabacus.ledger.rollups.accumulator import DIMENSIONS
from tokenabacus.ledger.rollups.rebuild import complete, daily_complete

# Time keys a range can be grouped by, in a zone: day, week (starting on Monday), month, and the
# hour of day (0-23). See reads.time_key for the values they take.
TIME_KEYS = ("day", "week", "month", "hour")
# More cut hours than this and one raw scan of the range is simpler than excluding each.
MAX_CUT_HOURS = 1000
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Figures:
    """Rows of (*key values in ``by`` order, status, currency, *FIGURES); a group may come in
    several rows (parts of the range summed apart) for the caller to add up."""

    rows: list[tuple]
    complete: bool  # False: the ledger predates rollups, every figure came from raw records


@dataclass(frozen=True)
class _Plan:
    hours: tuple[int, int] | None  # [from, to) in whole UTC hours, read from the rollups
    cut: tuple[int, ...]  # hours inside ``hours`` read from raw records instead
    raw: tuple[tuple[int, int], ...]  # [from, to) windows read from raw records


def usage_figures(
    db: Database,
    by: Sequence[str],
    since: int | None,
    until: int | None,
    zone: tzinfo,
    filters: Mapping[str, Sequence[str]],
    only: Collection[str],
) -> Figures:
    """The figures per group of ``by`` (dimensions, or TIME_KEYS cut in ``zone``) over [since,
    until) (UTC ms; None: open), filtered; ``only`` names the rollup figures the caller reads."""
    done = complete(db)
    # Open ends are the ledger's own first and last hour, and so is any end beyond them: the
    # days and months planned below are those holding records, not all of 1970 to 9998.
    span = reads.span(db)
    if span is None:
        since = until = None
    else:
        first, last = span[0] - span[0] % HOUR_MS, span[1] - span[1] % HOUR_MS + HOUR_MS
        since = first if since is None else max(since, first)
        until = last if until is None else min(until, last)
    rows: list[tuple] = []
    if since is not None and until is not None and since < until:
        offsets = _offsets(zone, since, until)
        keys = {d: None if d in DIMENSIONS else reads.time_key(d, offsets, _months(zone, since, until)) for d in by}
        plan = _plan(by, zone, since, until, offsets) if done else _Plan(None, (), ((since, until),))
        if plan.hours:
            hours, days = _days_within(plan, by, db)
            if hours:
                rows += reads.aggregate(db, "rollups", keys, hours, filters, plan.cut, only)
            if days:
                rows += reads.aggregate(db, "daily", keys, [days], filters, (), only)
        if plan.raw:
            rows += reads.aggregate(db, "raw", keys, plan.raw, filters)
    return Figures(rows, done)


def _days_within(plan: _Plan, by: Sequence[str], db: Database) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
    """The plan's whole hours split into whole UTC days, read from the daily rollups, and the
    hours at either end. Only for reports without time buckets (a local day or hour would cut a
    UTC day) and nothing cut inside, and once the daily rollups are complete."""
    assert plan.hours is not None
    a, b = plan.hours
    d0, d1 = -(-a // DAY_MS) * DAY_MS, b - b % DAY_MS
    if d1 - d0 < 2 * DAY_MS or plan.cut or set(by) & set(TIME_KEYS) or not daily_complete(db):
        return [plan.hours], None
    return [w for w in ((a, d0), (d1, b)) if w[0] < w[1]], (d0, d1)


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
    dims = set(by) & set(TIME_KEYS)
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

"""Reports read rollups for whole hours and raw records for the rest, and equal a brute-force
computation over the raw records for any range, grouping and filter, in UTC, Asia/Shanghai,
Asia/Kathmandu (+05:45: days start inside a UTC hour) and Europe/Berlin (a DST change); on
SQLite, PostgreSQL and MariaDB. The CLI's csv, json and xlsx say the same."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
from bisect import bisect_left
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook

from conftest import BIN
from test_rollups import HOUR, START, random_records
from tokenabacus.billing import reports
from tokenabacus.billing.reports import GROUPS, ReportQuery, build_query, run_report
from tokenabacus.calendar import zone_named
from tokenabacus.ledger import rollups
from tokenabacus.ledger.rollups import reads
from tokenabacus.ledger.store import Store

ZONES = ["UTC", "Asia/Shanghai", "Asia/Kathmandu", "Europe/Berlin"]
DAYS = 16


def brute(records: list[dict], q: ReportQuery) -> tuple[dict[tuple, dict], dict]:
    """The report computed record by record in Python: groups by label, and the total."""
    zone = zone_named(q.tz)
    filters = dict(q.filters)
    kept = [
        r
        for r in records
        if (q.since_ms is None or r["timestamp"] >= q.since_ms)
        and (q.until_ms is None or r["timestamp"] < q.until_ms)
        and all((r[d] or "") in values for d, values in filters.items())
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in kept:
        local = datetime.fromtimestamp(r["timestamp"] / 1000, zone)
        groups.setdefault(tuple(_bucket(d, r, local) for d in q.by), []).append(r)
    return {k: figures(v) for k, v in groups.items()}, figures(kept)


def _bucket(dim: str, r: dict, local: datetime):
    if dim == "day":
        return local.strftime("%Y-%m-%d")
    if dim == "week":
        return (local.date() - timedelta(days=local.weekday())).isoformat()
    if dim == "month":
        return local.strftime("%Y-%m")
    if dim == "hour":
        return local.hour
    return r[dim] or None


def figures(recs: list[dict]) -> dict:
    priced = [r for r in recs if r["cost_micros"] is not None]
    currencies = {r["currency"] or "" for r in priced}
    durations = sorted(r["duration_ms"] for r in recs if r["duration_ms"] is not None)
    p95 = None
    if durations:
        exact = durations[-(-len(durations) * 95 // 100) - 1]  # nearest rank
        longest = max(0, durations[-1])
        i = bisect_left(rollups.LATENCY_BOUNDS, exact)
        p95 = min(rollups.LATENCY_BOUNDS[i], longest) if i < len(rollups.LATENCY_BOUNDS) else longest
        # Never below the exact value; within the ladder at most one 1-2-5 step above it.
        assert p95 >= exact and (exact <= 10 or exact > rollups.LATENCY_BOUNDS[-1] or p95 <= 2.5 * exact)
    return {
        "requests": len(recs),
        **{k: sum(r[k] or 0 for r in recs) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
        "cached_tokens": sum(r["cached_tokens"] or 0 for r in recs),
        "cost_micros": sum(r["cost_micros"] for r in priced) if priced and len(currencies) == 1 else None,
        "currency": "mixed" if len(currencies) > 1 else (next(iter(currencies), None) or None),
        "unpriced_requests": len(recs) - len(priced),
        "avg_duration_ms": round(sum(durations) / len(durations), 1) if durations else None,
        "p95_duration_ms": p95,
        "errors": sum(r["status"] == "error" for r in recs),
        "cancelled": sum(r["status"] == "cancelled" for r in recs),
    }


def check(store: Store, records: list[dict], q: ReportQuery) -> reports.Report:
    rep = run_report(store, q)
    groups, total = brute(records, q)
    got = {tuple(r[d] for d in q.by): {k: r[k] for k in reports.COLUMNS} for r in rep.rows}
    if not q.by:
        assert list(got.values()) == [total]
    else:
        assert got == groups, q
    assert {k: rep.total[k] for k in reports.COLUMNS} == total, q
    if len(q.by) >= 2:  # each sub-total is its groups' sum
        for sub in rep.subtotals:
            members = [r for r in rep.rows if r[q.by[0]] == sub[q.by[0]]]
            assert sub["requests"] == sum(r["requests"] for r in members) and members
    return rep


@pytest.fixture
def ledger(db_url):
    """A ledger of random records written through the writer's insert (with replays), and the
    records as stored."""
    store = Store(db_url)
    rng = random.Random(11)
    records = random_records(rng, 2500, hours=24 * DAYS)
    for i in range(0, len(records), 400):
        store.usage.insert(records[i : i + 400] + rng.sample(records[: i + 1], min(i + 1, 5)))
    try:
        yield store, store.usage.latest(limit=10_000)
    finally:
        store.close()


def random_query(rng: random.Random, records: list[dict], tz: str) -> ReportQuery:
    by = tuple(rng.sample(GROUPS, rng.choice([0, 1, 1, 2, 2, 3])))
    zone = zone_named(tz)
    bounds = []
    for _ in range(2):
        kind = rng.choice(["none", "ms", "local midnight", "utc hour"])
        at = START + rng.randrange(DAYS * 24 * HOUR)
        if kind == "ms":
            bounds.append(at)
        elif kind == "utc hour":
            bounds.append(at - at % HOUR)
        elif kind == "local midnight":
            day = datetime.fromtimestamp(at / 1000, zone).date()
            bounds.append(int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1000))
        else:
            bounds.append(None)
    since, until = bounds
    if since is not None and until is not None and since > until:
        since, until = until, since
    filters = {}
    for dim in rng.sample(reports.DIMENSIONS, rng.choice([0, 0, 1, 2])):
        values = sorted({r[dim] or "" for r in records})
        filters[dim] = tuple(rng.sample(values, rng.randint(1, min(2, len(values)))))
    return ReportQuery(by=by, since_ms=since, until_ms=until, tz=tz, filters=tuple(sorted(filters.items())))


@pytest.mark.parametrize("tz", ZONES)
def test_reports_equal_a_brute_force_computation(ledger, tz):
    store, records = ledger
    rng = random.Random(tz)
    for _ in range(30):
        check(store, records, random_query(rng, records, tz))
    # The finance questions: a chargeback month, a week's ranking, daily peaks.
    for q in (
        build_query(("department",), "2026-03-21", "2026-04-01", tz),
        build_query(("department",), "2026-03-23", "2026-03-30", tz, sort="total_tokens"),
        build_query(("day", "hour"), "2026-03-20T10:30", "2026-04-02T17:10", tz),
        build_query(("month", "department", "project"), None, None, tz),
        build_query(("week", "model"), None, "2026-04-01", tz, "ok", {"currency": ("CNY", "")}),
    ):
        rep = check(store, records, q)
        assert rep.from_rollups
        # Without latency (money reports sum a third of the rollups' columns): the same figures,
        # and no duration figures rather than wrong ones.
        lean = run_report(store, replace(q, latency=False))
        timing = ("avg_duration_ms", "p95_duration_ms")
        for a, b in zip(rep.rows, lean.rows, strict=True):
            assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
            assert b["avg_duration_ms"] is None and b["p95_duration_ms"] is None


def test_whole_hours_come_from_rollups_and_cut_ones_from_raw_records(ledger, monkeypatch):
    store, records = ledger
    calls: list[tuple[str, tuple]] = []
    real = rollups.aggregate

    def spy(db, source, keys, windows, filters=None, exclude_hours=(), only=None):
        calls.append((source, tuple(windows), tuple(exclude_hours)))
        return real(db, source, keys, windows, filters, exclude_hours, only)

    monkeypatch.setattr(reads, "aggregate", spy)
    # UTC days: every boundary is a whole hour, nothing is read raw.
    check(store, records, build_query(("day",), "2026-03-21", "2026-03-28", "UTC"))
    assert [c[0] for c in calls] == ["rollups"]
    # Kathmandu days start at 18:15 UTC: raw records for the range's edges and for the hours
    # holding a local midnight, rollups for every other hour.
    calls.clear()
    q = build_query(("day", "department"), "2026-03-21", "2026-03-28", "Asia/Kathmandu")
    rep = check(store, records, q)
    assert q.since_ms is not None and q.until_ms is not None
    (_, hours, cut), (_, raw, _) = calls
    lo, hi = q.since_ms + 45 * 60_000, q.until_ms - 15 * 60_000
    assert hours == ((lo, hi),)
    assert cut == tuple(lo + d * 24 * HOUR - HOUR for d in range(1, 7))
    assert raw == ((q.since_ms, lo), *((h, h + HOUR) for h in cut), (hi, q.until_ms))
    assert rep.rows and rep.from_rollups
    # Hours of day at +05:45 cut every UTC hour: the range is read raw, still exact.
    calls.clear()
    check(store, records, build_query(("hour",), "2026-03-21", "2026-03-23", "Asia/Kathmandu"))
    assert [c[0] for c in calls] == ["raw"]
    # Without time buckets, whole UTC days come from the daily rollups, the hours at the edges
    # from the hourly ones (a Shanghai week starts at 16:00 UTC), the minutes around from raw.
    calls.clear()
    q = build_query(("department", "model"), "2026-03-21T00:30", "2026-03-28", "Asia/Shanghai")
    check(store, records, q)
    assert q.since_ms is not None and q.until_ms is not None
    got = {c[0]: c[1] for c in calls}
    day = 24 * HOUR
    first_day, last_day = -(-q.since_ms // day) * day, q.until_ms - q.until_ms % day
    assert got["daily"] == ((first_day, last_day),)
    assert got["rollups"] == ((q.since_ms + 30 * 60_000, first_day), (last_day, q.until_ms))
    assert got["raw"] == ((q.since_ms, q.since_ms + 30 * 60_000),)


def test_a_ledger_without_rollups_is_reported_from_raw_records(ledger):
    store, records = ledger
    from sqlalchemy import delete

    from tokenabacus.ledger.schema import meta, usage_rollups

    with store.engine.begin() as conn:
        conn.execute(delete(usage_rollups))
        conn.execute(delete(meta).where(meta.c.key == rollups.COMPLETE_KEY))
    rep = check(store, records, build_query(("department", "day"), None, None, "Asia/Kathmandu"))
    assert not rep.from_rollups


def test_empty_and_out_of_range_reports(db_url):
    store = Store(db_url)
    try:
        rep = run_report(store, build_query(("department",), None, None, "UTC"))
        assert rep.rows == [] and rep.total["requests"] == 0 and rep.total["avg_duration_ms"] is None
        assert run_report(store, build_query((), None, None, "UTC")).rows[0]["requests"] == 0
    finally:
        store.close()


def test_argument_errors_name_the_argument():
    for args, needle in (
        ((("planet",), None, None, "UTC"), "cannot group by planet"),
        ((("day", "day"), None, None, "UTC"), "names a dimension twice"),
        ((("day",), None, None, "UTC", "done"), "unknown status 'done'"),
        ((("day",), None, None, "Mars/Olympus"), "unknown time zone"),
    ):
        with pytest.raises(ValueError, match=needle):
            build_query(*args)
    with pytest.raises(ValueError, match="cannot filter by 'day'"):
        build_query(("user",), None, None, "UTC", filters={"day": ("x",)})
    with pytest.raises(ValueError, match="cannot sort by 'user'"):
        build_query(("user",), None, None, "UTC", sort="user")
    with pytest.raises(ValueError, match="expected DIMENSION=VALUE"):
        reports.parse_filters(["department"])
    assert reports.parse_filters(["model=a", "model=b", "user="]) == {"model": ("a", "b"), "user": ("",)}


def test_the_cli_formats_agree(tmp_path):
    data = tmp_path / "data"
    store = Store(f"sqlite:///{data / 'ledger.db'}")
    try:
        store.usage.insert(random_records(random.Random(4), 800, hours=24 * DAYS))
        records = store.usage.latest(limit=10_000)
        q = build_query(
            ("department", "week"), "2026-03-22", "2026-04-04", "Asia/Kathmandu", None, {"model": ("smol", "llama-3")}
        )
        expected = run_report(store, q).flat(totals=True)
    finally:
        store.close()
    groups, total = brute(records, q)
    assert {k: expected[-1][k] for k in reports.COLUMNS} == total

    def cli(fmt: str, *extra: str) -> Path:
        out = tmp_path / f"report.{fmt}"
        args = ["report", "--by", "department,week", "--since", "2026-03-22", "--until", "2026-04-04"]
        args += ["--tz", "Asia/Kathmandu", "--filter", "model=smol", "--filter", "model=llama-3", "--totals"]
        r = subprocess.run(
            [str(BIN), *args, "--format", fmt, "--output", str(out), *extra, "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0 and not r.stderr, r.stderr
        return out

    as_json = json.loads(cli("json").read_text())
    cols = list(as_json[0])
    assert cols[:3] == ["row", "department", "week"] and "p95_duration_ms" in cols
    assert as_json == [{c: row.get(c) for c in cols} for row in expected]
    assert [r["row"] for r in as_json].count("total") == 1 and as_json[-1]["row"] == "total"
    as_csv = list(csv.DictReader(io.StringIO(cli("csv").read_text())))
    assert as_csv == [{c: "" if v is None else str(v) for c, v in row.items()} for row in as_json]
    sheet = load_workbook(cli("xlsx")).active
    assert sheet is not None
    cells = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert cells[0] == cols
    assert [dict(zip(cols, r, strict=True)) for r in cells[1:]] == as_json
    table = subprocess.run(
        [str(BIN), "report", "--by", "department", "--sort", "cost_micros", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "total" in table and "p95_duration_ms" in table and "…" not in table

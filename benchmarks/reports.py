#!/usr/bin/env python3
"""Reports at scale: 10 million realistic records ingested through the real writer, then the
reports finance and operators run, timed.

Records: 90 days (2026-09-02 to 2026-11-30, Asia/Shanghai), ~12 departments, ~80 projects, ~2,000
users (1-2 keys each) and 8 models, all Zipf-skewed (a few heavy users and models carry most of the
traffic; each user mostly sticks to one model); business-hour peaks and quiet weekends; ~4% errors,
cancellations and refusals; lognormal token counts and latencies per model; one model unpriced.
They are generated in time order, as gateways write them, into spool segments (JSONL files, as
the spool writes them), and each segment goes through ``ledger.writer.drain_segments``, the
function the background writer runs: parse, check, insert + hourly rollups, unlink. Only that
call is timed for ingest (generating and writing the segment is not).

Then, best of three runs each (Asia/Shanghai):

  monthly chargeback   by department, October 2026, with the grand total
  weekly ranking       by department, the week of Monday 2026-11-16, largest cost first
  daily peaks          by day and hour of day, November 2026
  ...and for scale: the chargeback in Asia/Kathmandu (+05:45, days cut inside UTC hours), and
  the chargeback read from raw records only (what reports did before rollups).

Targets (issue 8): ingest >= 20,000 records/s on SQLite; each report < 1 s.

    python benchmarks/reports.py                          # 10M records, SQLite
    python benchmarks/reports.py --db postgresql          # the local PostgreSQL (database tokenabacus_bench)
    python benchmarks/reports.py --records 20000          # CI smoke
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from tokenabacus.billing import chargeback, rankings, suspicious, windows
from tokenabacus.billing.prices import PriceBook, PriceVersion
from tokenabacus.billing.reports import ReportQuery, build_query, run_report
from tokenabacus.billing.table import Table
from tokenabacus.demo.traffic import ModelShape, Population, Profile, charged, day_records, request_ids
from tokenabacus.demo.traffic import ingest as ingest_segments
from tokenabacus.ledger import rollups
from tokenabacus.ledger.schema import metadata, usage_rollups
from tokenabacus.ledger.store import Store

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tokenabacus_bench"
ZONE = ZoneInfo("Asia/Shanghai")
FIRST_DAY = datetime(2026, 9, 2)
DAYS = 90
INGEST_TARGET = 20_000  # records/s
REPORT_TARGET_S = 1.0

MODELS = [  # name, prompt median, completion median, latency median ms, CNY micros per 1M in/out (None: unpriced)
    ("qwen2.5-7b-instruct", 700, 260, 1400, (500_000, 1_000_000)),
    ("qwen2.5-72b-instruct", 900, 320, 4200, (4_000_000, 12_000_000)),
    ("deepseek-v3", 1100, 420, 3600, (2_000_000, 8_000_000)),
    ("glm-4-9b", 500, 200, 1100, (600_000, 600_000)),
    ("qwen2.5-coder-32b", 1600, 380, 3000, (2_000_000, 6_000_000)),
    ("llama-3.1-8b", 450, 180, 900, (300_000, 600_000)),
    ("bge-m3-rerank", 300, 1, 120, (100_000, 0)),
    ("internal-finetune-v2", 800, 300, 2000, None),
]
DEPARTMENT_NAMES = "marketing sales rnd support finance legal hr ops data it design exec".split()
# The generator is tokenabacus.demo's (`tokenabacus demo seed` draws its month from it too).
PROFILE = Profile(
    departments=tuple(f"dept-{name}" for name in DEPARTMENT_NAMES),
    projects=tuple(f"proj-{i:02d}" for i in range(80)),
    users=tuple(f"user{i:04d}" for i in range(2000)),
    models=tuple(ModelShape(name, p, c, lat) for name, p, c, lat, _ in MODELS),
    first_day=FIRST_DAY.date(),
    days=DAYS,
    zone=ZONE,
)
# Each priced model's one price version, charged as the gateway's enrich step charges.
BOOK = PriceBook(
    [PriceVersion(f"pv_{name[:6]}", name, 0, "CNY", price[0], None, price[1]) for name, *_, price in MODELS if price]
)


def records(total: int, seed: int = 2026) -> Iterator[list[dict]]:
    """The records of each day in time order (a day at a time keeps memory flat)."""
    rng = np.random.default_rng(seed)
    pop = Population(PROFILE, rng)
    for _, day in day_records(PROFILE, pop, total, rng, request_ids()):
        yield charged(day, BOOK)


def ingest(store: Store, total: int, segment: int, spool: Path) -> tuple[float, int]:
    """Spool segments through the writer's drain; (seconds spent draining, records moved)."""

    def progress(moved: int, spent: float) -> None:
        print(f"  ... {moved:,} records in, {moved / spent:,.0f}/s", file=sys.stderr, flush=True)

    return ingest_segments(store, records(total), spool, segment, progress)


def timed(fn: Callable[[], object], runs: int = 3) -> tuple[float, float, object]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), out


def the_reports(store: Store) -> list[tuple[str, Callable[[], tuple[int, int]], bool]]:
    """(name, run it: (rows, requests counted), read raw records only). The named reports are
    the functions behind `tokenabacus report NAME` and /admin/reports/NAME."""
    tz = "Asia/Shanghai"
    october = ("2026-10-01", "2026-11-01")
    week = windows.window(tz, since="2026-11-16", until="2026-11-23")
    november = windows.window(tz, month="2026-11")

    def generic(q: ReportQuery) -> Callable[[], tuple[int, int]]:
        def run() -> tuple[int, int]:
            rep = run_report(store, q)
            return len(rep.rows), rep.total["requests"]

        return run

    def table(make: Callable[[], Table]) -> Callable[[], tuple[int, int]]:
        def run() -> tuple[int, int]:
            t = make()
            groups = [r for r in t.rows if r.get("row", "group") == "group"]
            return len(groups), sum(r.get("requests") or 0 for r in groups)

        return run

    def charge() -> tuple[int, int]:
        c = chargeback.chargeback(store, "2026-10", tz)
        return sum(len(rows) for rows in c.departments.values()), sum(t["requests"] for t in c.totals)

    return [
        ("report chargeback --month 2026-10 (dept x currency x project x user x model)", charge, False),
        (
            "report top --by department, week of 11-16 (and the week before)",
            table(lambda: rankings.top(store, "department", week)),
            False,
        ),
        ("report peaks, November", table(lambda: rankings.peaks(store, november)), False),
        ("report models, November", table(lambda: rankings.models(store, november)), False),
        ("report drift, November (model x day)", table(lambda: rankings.drift(store, november)), False),
        (
            "report suspicious, 2026-11-20 (raw records: a day and its 7-day baseline)",
            table(lambda: suspicious.suspicious(store, windows.window(tz, since="2026-11-20", until="2026-11-21"))),
            False,
        ),
        (
            "report --by department, Oct, in Asia/Kathmandu (+05:45)",
            generic(build_query(("department",), *october, "Asia/Kathmandu")),
            False,
        ),
        (
            "report --by department, Oct, from raw records only",
            generic(build_query(("department",), *october, tz)),
            True,
        ),
    ]


def fresh_database(kind: str, url: str | None, data: Path) -> str:
    if kind == "sqlite":
        return url or f"sqlite:///{data / 'ledger.db'}"
    url = url or PG_URL
    u = make_url(url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": u.database}).first():
            conn.execute(text(f'CREATE DATABASE "{u.database}"'))
    admin.dispose()
    engine = create_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    return url


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--url", help=f"ledger URL (default: a temporary SQLite file, or {PG_URL})")
    ap.add_argument("--segment", type=int, default=5_000, help="records per spool segment (default 5,000)")
    ap.add_argument("--data-dir", type=Path, help="where the spool (and SQLite ledger) go; default a temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the data dir (and database) afterwards")
    ap.add_argument("--check", action="store_true", help="exit 3 when a target is missed")
    args = ap.parse_args()

    data = args.data_dir or Path(tempfile.mkdtemp(prefix="tokenabacus-reports-"))
    data.mkdir(parents=True, exist_ok=True)
    url = fresh_database(args.db, args.url, data)
    store = Store(url)
    print(f"{args.records:,} records into {args.db} (segments of {args.segment:,})", file=sys.stderr)
    try:
        spent, moved = ingest(store, args.records, args.segment, data / "spool")
        if args.db == "postgresql":
            with store.engine.begin() as conn:  # what autovacuum would have done after the load
                conn.execute(text("ANALYZE usage_records"))
                conn.execute(text("ANALYZE usage_rollups"))
        with store.engine.connect() as conn:
            rollup_rows = conn.execute(select(func.count()).select_from(usage_rollups)).scalar_one()
        st = rollups.status(store.db)
        assert st["records_counted"] == st["records"] == moved, st
        rate = moved / spent if spent else 0.0
        lines = [
            "| db | records | what | result | target |",
            "|---|---:|---|---:|---|",
            f"| {args.db} | {moved:,} | ingest through the writer ({rollup_rows:,} rollup rows) "
            f"| {rate:,.0f} records/s ({spent:,.1f} s) | "
            + (
                f">= {INGEST_TARGET:,}/s {'MET' if rate >= INGEST_TARGET else 'MISSED'} |"
                if args.db == "sqlite"
                else "(the target is SQLite's) |"
            ),
        ]
        ok = rate >= INGEST_TARGET or args.db != "sqlite"  # the ingest target is SQLite's
        complete = rollups.complete
        for name, run, raw_only in the_reports(store):
            if raw_only:
                rollups.complete = lambda db: False  # type: ignore[assignment]
            try:
                best, median, out = timed(run)
            finally:
                rollups.complete = complete
            rows, requests = out  # type: ignore[misc]
            raw_read = "suspicious" in name
            met = best < REPORT_TARGET_S
            ok = ok and (met or raw_only or raw_read)
            verdict = "(for comparison)" if raw_only else f"< {REPORT_TARGET_S:g} s {'MET' if met else 'MISSED'}"
            lines.append(
                f"| {args.db} | {moved:,} | {name}: {rows:,} rows, {requests:,} requests "
                f"| {best:.3f} s (median {median:.3f}) | {verdict} |"
            )
        print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs\n")
        print("\n".join(lines))
        return 0 if ok or not args.check else 3
    finally:
        store.close()
        if not args.keep:
            if args.db == "postgresql":
                fresh_database(args.db, args.url, data)  # drops the tables again
            if args.data_dir is None:
                shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""The named reports (top, peaks, models, suspicious, drift, chargeback) on SQLite, PostgreSQL and
MariaDB: each equals a brute-force computation over the records written through the real writer;
the chargeback's grand total equals the ledger's own SUM(cost_micros) to the micro-unit; the CLI
and /admin give the same figures in every format, and a viewer sees only its own scope."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from conftest import BIN, GatewayProc
from tokenabacus.billing import chargeback as cb
from tokenabacus.billing import chargeback_book, rankings, suspicious, windows, workbook_labels
from tokenabacus.billing.arguments import ArgumentError, as_option, as_query
from tokenabacus.billing.prices import PriceBook, PriceVersion
from tokenabacus.ledger.record import FIELDS, new_request_id
from tokenabacus.ledger.schema import usage_records
from tokenabacus.ledger.store import Store

ZONE = "Asia/Shanghai"
TZ = ZoneInfo(ZONE)
MONTH_START = datetime(2026, 11, 1, tzinfo=TZ)
NOW = int(datetime(2026, 11, 26, 15, 0, tzinfo=TZ).timestamp() * 1000)  # a Thursday afternoon
TEAMS = [("marketing", "campaign"), ("marketing", "brand"), ("rnd", "search"), ("finance", None), (None, None)]
USERS = ["ann", "ben", "cai", None]
# qwen-7b's price changes on the 16th; qwen-vl is charged in USD; smol has no price.
VERSIONS = [
    PriceVersion(
        "pv_q1", "qwen-7b", int(MONTH_START.timestamp() * 1000) - 86_400_000, "CNY", 800_000, 200_000, 2_400_000
    ),
    PriceVersion(
        "pv_q2", "qwen-7b", int(datetime(2026, 11, 16, tzinfo=TZ).timestamp() * 1000), "CNY", 600_000, None, 1_800_000
    ),
    PriceVersion("pv_vl", "qwen-vl", 0, "USD", 2_500_000, None, 2_500_000),
]
BOOK = PriceBook(VERSIONS)


def make_records(rng: random.Random, n: int, start: datetime, days: int) -> list[dict]:
    from tokenabacus.ledger.record import start_record

    out = []
    weights = [5, 3, 4, 1, 1]
    for _ in range(n):
        dept, project = rng.choices(TEAMS, weights)[0]
        ts = int(start.timestamp() * 1000) + rng.randrange(days * 86_400_000)
        rec = start_record(model=rng.choice(["qwen-7b", "qwen-7b", "qwen-vl", "smol"]), endpoint="/v1/chat/completions")
        rec.request_id = new_request_id()
        rec.timestamp = ts
        rec.department, rec.project, rec.user = dept, project, rng.choice(USERS)
        rec.key_id = f"key_{rec.user or 'svc'}"
        rec.status = rng.choice(["ok"] * 10 + ["error", "cancelled"])
        rec.prompt_tokens = rng.randint(1, 3000)
        rec.completion_tokens = rng.randint(0, 900)
        rec.total_tokens = rec.prompt_tokens + rec.completion_tokens
        rec.cached_tokens = rng.choice([None, 0, rng.randint(0, rec.prompt_tokens)])
        rec.duration_ms = rng.randint(20, 40_000)
        rec.usage_source = "tokenizer"
        BOOK.charge(rec)
        out.append(rec.to_dict())
    return out


@pytest.fixture
def ledger(db_url):
    store = Store(db_url)
    rng = random.Random(5)
    records = make_records(rng, 3000, MONTH_START - timedelta(days=8), 40)
    for i in range(0, len(records), 500):
        store.usage.insert(records[i : i + 500])
    try:
        yield store, records
    finally:
        store.close()


def local(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, TZ)


def inside(records: list[dict], win: windows.Window) -> list[dict]:
    return [r for r in records if win.since_ms <= r["timestamp"] < win.until_ms]


def test_top_ranks_by_tokens_and_cost_with_change(ledger):
    store, records = ledger
    win = windows.window(ZONE, "week", now_ms=NOW)
    assert win.label == "week of 2026-11-23" and local(win.since_ms) == datetime(2026, 11, 23, tzinfo=TZ)
    t = rankings.top(store, "department", win)
    tokens, cost, before = defaultdict(int), defaultdict(int), defaultdict(int)
    for r in inside(records, win):
        tokens[r["department"]] += r["total_tokens"]
        if r["currency"] == "CNY":  # most requests were charged in CNY: the ranking's currency
            cost[r["department"]] += r["cost_micros"]
    for r in records:
        if win.before[0] <= r["timestamp"] < win.before[1]:
            before[r["department"]] += r["total_tokens"]
    groups = [r for r in t.rows if r["row"] == "group"]
    assert [r["department"] for r in groups] == sorted(tokens, key=lambda d: -tokens[d])
    for r in groups:
        d = r["department"]
        assert r["total_tokens"] == tokens[d] and r["cost_micros"] == cost[d] and r["currency"] == "CNY"
        assert r["tokens_share_pct"] == round(100 * tokens[d] / sum(tokens.values()), 1)
        assert r["previous_total_tokens"] == before[d]
        assert r["tokens_change_pct"] == round(100 * (tokens[d] - before[d]) / before[d], 1)
    by_cost = sorted(groups, key=lambda r: r["cost_rank"])
    assert [r["department"] for r in by_cost] == sorted(cost, key=lambda d: -cost[d])
    total = t.rows[-1]
    assert total["row"] == "total" and total["total_tokens"] == sum(tokens.values())
    assert total["cost_micros"] == sum(cost.values())
    assert any("USD" in n for n in t.notes)  # qwen-vl's dollars are named, not mixed in
    usd = rankings.top(store, "department", win, currency="USD")
    assert usd.rows[-1]["cost_micros"] == sum(r["cost_micros"] for r in inside(records, win) if r["currency"] == "USD")
    ranked = rankings.top(store, "project", win, rank="cost", limit=2)
    assert [r["cost_rank"] for r in ranked.rows if r["row"] == "group"] == [1, 2]


def test_peaks_give_each_local_days_busiest_hour(ledger):
    store, records = ledger
    win = windows.window(ZONE, "week", previous=True, now_ms=NOW)
    t = rankings.peaks(store, win, metric="requests")
    per: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r in inside(records, win):
        at = local(r["timestamp"])
        per[at.date().isoformat()][at.hour] += 1
    assert [r["day"] for r in t.rows] == sorted(per)
    for row in t.rows:
        hours = per[row["day"]]
        best = max(hours.values())
        assert row["requests"] == best and hours[row["hour"]] == best
        assert row["hour"] == min(h for h, n in hours.items() if n == best)  # ties: the earlier hour
        assert row["day_requests"] == sum(hours.values())
        assert row["peak_hour"] == f"{row['hour']:02d}:00-{(row['hour'] + 1) % 24:02d}:00"


def test_models_cost_per_1k_tokens(ledger):
    store, records = ledger
    win = windows.window(ZONE, month="2026-11")
    t = rankings.models(store, win)
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in inside(records, win):
        s = sums[(r["model"], r["currency"])]
        s[0] += 1
        s[1] += r["total_tokens"]
        s[2] += r["cost_micros"] or 0
    assert {(r["model"], r["currency"]) for r in t.rows} == set(sums)
    for r in t.rows:
        n, tokens, cost = sums[(r["model"], r["currency"])]
        assert r["requests"] == n and r["total_tokens"] == tokens
        if r["currency"] is None:  # smol: no price, so no cost at all rather than zero
            assert r["model"] == "smol" and r["cost_micros"] is None and r["cost_per_1k_micros"] is None
            continue
        assert r["cost_micros"] == cost
        exact = Decimal(cost * 1000) / tokens
        assert abs(r["cost_per_1k_micros"] - exact) <= Decimal("0.5")
        assert r["cost_per_1k_tokens"].startswith("¥" if r["currency"] == "CNY" else "$")
    assert t.rows[0]["cost_micros"] == max(r["cost_micros"] or 0 for r in t.rows)  # most expensive first


def test_chargeback_grand_total_is_the_ledgers_sum(ledger, tmp_path):
    store, records = ledger
    # Corrections booked in the month (and one outside it, which must not count).
    nov = int(datetime(2026, 11, 20, tzinfo=TZ).timestamp() * 1000)
    store.prices.adjust(-1_500_000, "CNY", "duplicate batch refunded", "auditor", at=nov, department="marketing")
    store.prices.adjust(250_000, "USD", "vision surcharge", "auditor", at=nov, department="rnd", project="search")
    store.prices.adjust(9_999_999, "CNY", "December's", "auditor", at=NOW + 10 * 86_400_000, department="rnd")
    c = cb.chargeback(store, "2026-11", ZONE, BOOK.all_versions())
    win = c.window
    assert (local(win.since_ms), local(win.until_ms)) == (MONTH_START, datetime(2026, 12, 1, tzinfo=TZ))
    with store.db.connect() as conn:
        t = usage_records.c
        ledger_sum = dict(
            conn.execute(
                select(t.currency, func.sum(t.cost_micros))
                .where(t.timestamp >= win.since_ms, t.timestamp < win.until_ms, t.currency.is_not(None))
                .group_by(t.currency)
            ).all()
        )
    totals = {x["currency"]: x for x in c.totals}
    assert {k: int(v) for k, v in ledger_sum.items()} == {k: v["cost_micros"] for k, v in totals.items() if k}
    assert totals["CNY"]["adjustments_micros"] == -1_500_000 and totals["USD"]["adjustments_micros"] == 250_000
    assert totals["CNY"]["amount_due_micros"] == int(ledger_sum["CNY"]) - 1_500_000
    assert totals[None]["cost_micros"] is None and totals[None]["unpriced_requests"] == sum(
        1 for r in inside(records, win) if r["cost_micros"] is None
    )
    # Every department's totals add up to the grand totals, and its rows to its totals.
    for cur, tot in totals.items():
        dept_totals = [
            r for rows in c.departments.values() for r in rows if r["row"] == "total" and r["currency"] == cur
        ]
        assert sum(r["total_tokens"] for r in dept_totals) == tot["total_tokens"]
        if cur:
            assert sum(r["amount_due_micros"] for r in dept_totals) == tot["amount_due_micros"]
    for rows in c.departments.values():
        for cur in {r["currency"] for r in rows}:
            groups = [r for r in rows if r["row"] == "group" and r["currency"] == cur]
            (total,) = [r for r in rows if r["row"] == "total" and r["currency"] == cur]
            assert sum(r["requests"] for r in groups) == total["requests"]
            subs = [r for r in rows if r["row"] == "subtotal" and r["currency"] == cur]
            assert sum(r["total_tokens"] for r in subs) == total["total_tokens"]
    assert set(c.departments) == {"marketing", "rnd", "finance", "(none)"}
    # Both of qwen-7b's versions charged the month; what each charged adds up.
    versions = {v["price_version"]: v for v in c.versions}
    assert set(versions) == {"pv_q1", "pv_q2", "pv_vl"}
    assert versions["pv_q2"]["input_per_1m"] == "¥0.600000 per 1M tokens" or "0.6" in versions["pv_q2"]["input_per_1m"]
    assert sum(v["cost_micros"] for v in c.versions if v["currency"] == "CNY") == int(ledger_sum["CNY"])
    assert [a["reason"] for a in c.adjustments] == ["duplicate batch refunded", "vision surcharge"]

    wb = load_workbook(io.BytesIO(chargeback_book.workbook(c, "en")))
    assert wb.sheetnames[0] == "Summary" and {"marketing", "rnd", "finance", "(none)"} <= set(wb.sheetnames)
    assert {"Price versions", "Adjustments"} <= set(wb.sheetnames)
    summary = list(wb["Summary"].iter_rows(values_only=True))
    # Headers a person reads ("Amount due"); the rows' kinds as labels ("grand total").
    header = summary.index(next(r for r in summary if r and r[0] == "Row"))
    key = {label: k for k, label in workbook_labels.columns("en").items()}
    cols = [key[c] for c in summary[header]]
    rows = [dict(zip(cols, r, strict=True)) for r in summary[header + 1 :]]
    grand = {r["currency"]: r for r in rows if r["row"] == "grand total"}
    # Exact decimals in the cells: the sheet's total is the ledger's sum to the micro-unit.
    assert Decimal(str(grand["CNY"]["cost"])) * 1_000_000 == int(ledger_sum["CNY"])
    assert Decimal(str(grand["CNY"]["amount_due"])) * 1_000_000 == int(ledger_sum["CNY"]) - 1_500_000
    sheet = wb["marketing"]
    totals = ("subtotal", "department total")
    bold_rows = [r[0].value for r in sheet.iter_rows() if r[0].font.bold and r[0].value in totals]
    assert "subtotal" in bold_rows and "department total" in bold_rows

    # A viewer-style scope: only one department's rows, totals and adjustments.
    scoped = cb.chargeback(store, "2026-11", ZONE, BOOK.all_versions(), {"department": ("rnd",)})
    assert set(scoped.departments) == {"rnd"} and [a["reason"] for a in scoped.adjustments] == ["vision surcharge"]
    assert scoped.hardware == []


def test_suspicious_flags_the_burst_and_not_the_steady(db_url):
    """A week of steady traffic, then a day in which one key bursts to 30x its usual minute, a
    new key floods, and the rest carry on: exactly the two are flagged, for what they did."""
    store = Store(db_url)
    day = datetime(2026, 11, 25, tzinfo=TZ)
    start = int(day.timestamp() * 1000)
    rng = random.Random(3)
    recs = []

    def add(key: str, ts: int, tokens: int = 300) -> None:
        recs.append(
            {
                **dict.fromkeys(FIELDS),
                "request_id": new_request_id(),
                "timestamp": ts,
                "model": "qwen-7b",
                "status": "ok",
                "stream": False,
                "key_id": key,
                "user": key.removeprefix("key_"),
                "project": "p",
                "department": "d",
                "prompt_tokens": tokens - 50,
                "completion_tokens": 50,
                "total_tokens": tokens,
            }
        )

    for d in range(1, 8):  # the baseline: 2 requests a minute in 60 minutes a day, for each key
        for m in range(60):
            for key in ("key_a", "key_b"):
                for _ in range(2):
                    add(key, start - d * 86_400_000 + 9 * 3_600_000 + m * 60_000 + rng.randrange(60_000))
    for m in range(60):  # the day: key_b as usual, key_a too except one minute
        for _ in range(2):
            add("key_b", start + 9 * 3_600_000 + m * 60_000 + rng.randrange(60_000))
            add("key_a", start + 10 * 3_600_000 + m * 60_000 + rng.randrange(60_000))
    burst = start + 14 * 3_600_000 + 7 * 60_000
    for _ in range(60):
        add("key_a", burst + rng.randrange(60_000))
    for _ in range(200):  # a new key flooding
        add("key_c", burst + 5 * 60_000 + rng.randrange(60_000))
    for _ in range(5):  # a new key trying the service
        add("key_d", burst + rng.randrange(60_000))
    try:
        for i in range(0, len(recs), 2000):
            store.usage.insert(recs[i : i + 2000])
        t = suspicious.suspicious(store, windows.window(ZONE, "today", now_ms=start + 20 * 3_600_000))
        flagged = {r["key_id"]: r for r in t.rows}
        assert set(flagged) == {"key_a", "key_c"}
        a = flagged["key_a"]
        assert a["peak_requests_per_minute"] == 60 and a["baseline_requests_per_minute"] == 2.0
        assert a["requests_ratio"] == 30.0 and a["peak_requests_at"] == "2026-11-25 14:07"
        assert a["user"] == "a" and a["project"] == "p" and "30.0x its usual" in a["reason"]
        assert a["flagged_on"] == "requests"
        c = flagged["key_c"]
        assert c["peak_requests_per_minute"] == 200 and c["baseline_requests_per_minute"] is None
        assert "no history" in c["reason"]
        # Tokens per minute: key_b sends the same number of requests with huge prompts.
        for _ in range(2):
            add("key_b", start + 11 * 3_600_000 + rng.randrange(60_000), tokens=90_000)
        store.usage.insert(recs[-2:])
        t = suspicious.suspicious(store, windows.window(ZONE, "today", now_ms=start + 20 * 3_600_000))
        b = {r["key_id"]: r for r in t.rows}["key_b"]
        assert b["peak_tokens_per_minute"] == 180_000 and "tokens/min" in b["reason"]
        assert "requests/min" not in b["reason"] and b["flagged_on"] == "tokens"
        by_user = suspicious.suspicious(
            store, windows.window(ZONE, "today", now_ms=start + 20 * 3_600_000), by="user", filters={"user": ("c",)}
        )
        assert [r["user"] for r in by_user.rows] == ["c"]
        with pytest.raises(ValueError, match="cannot rank by"):
            suspicious.suspicious(store, windows.window(ZONE, "today"), by="prompt")
    finally:
        store.close()


def test_drift_compares_our_count_with_the_upstreams(db_url):
    store = Store(db_url)
    day = int(datetime(2026, 11, 10, 12, tzinfo=TZ).timestamp() * 1000)
    base = {**dict.fromkeys(FIELDS), "status": "ok", "stream": False, "model": "qwen-7b", "user": "u"}
    cases = [  # (source, ours, upstream's): compared only when ours was billed and theirs kept
        ("tokenizer", (100, 20), (100, 20)),
        ("tokenizer", (100, 20), (98, 21)),
        ("tokenizer", (50, 5), None),
        ("upstream", (70, 7), (70, 7)),
        ("tokenizer", (10, 1), (10, 1)),
        ("upstream", (297, 8), (410, 80)),  # a claim capped at what the request could use
    ]
    recs = []
    for i, (source, (p, c), up) in enumerate(cases):
        recs.append(
            {
                **base,
                "request_id": new_request_id(),
                "timestamp": day + i * 3_600_000 * (5 if i >= 4 else 1),  # the last two on the next local day
                "prompt_tokens": p,
                "completion_tokens": c,
                "total_tokens": p + c,
                "usage_source": source,
                "upstream_prompt_tokens": up and up[0],
                "upstream_completion_tokens": up and up[1],
            }
        )
    try:
        store.usage.insert(recs)
        t = rankings.drift(store, windows.window(ZONE, month="2026-11"))
        first, second = t.rows
        assert (first["day"], second["day"]) == ("2026-11-10", "2026-11-11")
        assert first["requests"] == 4 and first["compared_requests"] == 2 and first["mismatched_requests"] == 1
        assert (first["our_prompt_tokens"], first["upstream_prompt_tokens"]) == (200, 198)
        assert (first["prompt_difference"], first["completion_difference"]) == (2, -1)
        assert first["difference_pct"] == round(100 * (240 - 239) / 239, 1)
        assert second["compared_requests"] == 2 and second["mismatched_requests"] == 1
        assert (second["our_completion_tokens"], second["upstream_completion_tokens"]) == (9, 81)
        assert (second["prompt_difference"], second["completion_difference"]) == (-113, -72)
        only = rankings.drift(store, windows.window(ZONE, month="2026-11"), only_differences=True)
        assert [r["day"] for r in only.rows] == ["2026-11-10", "2026-11-11"]
        # Half an hour is read from the raw records, not the rollups: the capped claim is compared there too.
        (cut,) = rankings.drift(store, windows.window(ZONE, since="2026-11-11T13:00", until="2026-11-11T13:30")).rows
        assert (cut["compared_requests"], cut["mismatched_requests"]) == (1, 1)
        assert (cut["our_completion_tokens"], cut["upstream_completion_tokens"]) == (8, 80)
    finally:
        store.close()


def test_windows():
    now = int(datetime(2026, 3, 1, 1, 30, tzinfo=TZ).timestamp() * 1000)  # a Sunday, just after midnight
    w = windows.window(ZONE, "week", now_ms=now)
    assert local(w.since_ms) == datetime(2026, 2, 23, tzinfo=TZ) and w.until_ms - w.since_ms == 7 * 86_400_000
    m = windows.window(ZONE, "month", previous=True, now_ms=now)
    assert m.label == "2026-02" and local(m.before[0]) == datetime(2026, 1, 1, tzinfo=TZ)
    d = windows.window(ZONE, "today", previous=True, now_ms=now)
    assert d.label == "2026-02-28"
    s = windows.window(ZONE, since="2026-02-01", until="2026-02-11")
    assert s.before == (s.since_ms - 10 * 86_400_000, s.since_ms)
    for kw, msg in (
        ({"period": "fortnight"}, "unknown period"),
        ({"since": "2026-02-11", "until": "2026-02-01"}, "after `since`"),
        ({"month": "2026-13"}, "expected YYYY-MM"),
        ({"until": "2026-02-01"}, "needs `since`"),
        ({"period": "week", "month": "2026-01"}, "give one of"),
    ):
        with pytest.raises(ValueError, match=msg):
            windows.window(ZONE, **kw)
    # One error, worded by each surface: the CLI's options, /admin's query parameters.
    with pytest.raises(ArgumentError) as bad:
        windows.window(ZONE, since="2026-02-11", until="2026-02-01")
    assert bad.value.worded(as_option) == "--until must be after --since"
    assert bad.value.worded(as_query) == "until must be after since"
    with pytest.raises(ArgumentError) as bad:
        windows.window(ZONE, since="0001-01-01")
    assert bad.value.worded(as_option).startswith("--since '0001-01-01' is out of range")


# The CLI and /admin -------------------------------------------------------------------------------
def test_cli_and_admin_agree_and_a_viewer_sees_its_own(tmp_path):
    cfg = {"governance": {"timezone": ZONE}}
    gw = GatewayProc(tmp_path / "data", cfg).start()
    try:
        store = gw.store()
        try:
            store.usage.insert(make_records(random.Random(9), 1500, MONTH_START, 30))
        finally:
            store.close()
        viewer = json.loads(gw.cli("keys", "create", "--role", "viewer", "--project", "search", "--json").stdout)["key"]
        member = gw.create_key(user="m", project="search", department="rnd")
        base = gw.base_url.removesuffix("/v1") + "/admin"
        a = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {gw.admin_key}"}, timeout=60)
        v = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {viewer}"}, timeout=60)
        m = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {member}"}, timeout=60)
        week = ["--since", "2026-11-09", "--until", "2026-11-16"]
        params = {"since": "2026-11-09", "until": "2026-11-16"}
        for name, args, extra in (
            ("top", ["--by", "project"], {"by": "project"}),
            ("peaks", [], {}),
            ("models", [], {}),
            ("drift", [], {}),
            ("suspicious", ["--min-requests", "1", "--factor", "1.5"], {"min_requests": 1, "factor": 1.5}),
        ):
            cli = json.loads(gw.cli("report", name, *args, *week, "--format", "json").stdout)
            api = a.get(f"/reports/{name}", params={**params, **extra})
            assert api.status_code == 200, api.text
            assert (
                [{k: r.get(k) for k in cli[0]} for r in api.json()["rows"]] == cli if cli else api.json()["rows"] == []
            )
            csv_cli = gw.cli("report", name, *args, *week, "--format", "csv").stdout
            csv_api = a.get(f"/reports/{name}", params={**params, **extra, "format": "csv"})
            assert csv_api.headers["content-type"].startswith("text/csv") and csv_api.text == csv_cli
        # The chargeback workbook is the same from both, sheet by sheet.
        out = tmp_path / "chargeback.xlsx"
        gw.cli("report", "chargeback", "--month", "2026-11", "--format", "xlsx", "--output", str(out))
        api = a.get("/reports/chargeback", params={"month": "2026-11", "format": "xlsx"})
        assert api.status_code == 200 and api.headers["content-type"].startswith("application/vnd.openxml")
        from_cli, from_api = load_workbook(out), load_workbook(io.BytesIO(api.content))
        assert from_cli.sheetnames == from_api.sheetnames and "marketing" in from_cli.sheetnames
        for name in from_cli.sheetnames:
            assert list(from_cli[name].iter_rows(values_only=True)) == list(from_api[name].iter_rows(values_only=True))
        as_json = a.get("/reports/chargeback", params={"month": "2026-11"}).json()
        cli_json = json.loads(gw.cli("report", "chargeback", "--month", "2026-11", "--format", "json").stdout)
        assert as_json == cli_json
        store = gw.store()
        try:
            with store.db.connect() as conn:
                t = usage_records.c
                since, until = as_json["since_ms"], as_json["until_ms"]
                cny = conn.execute(
                    select(func.sum(t.cost_micros)).where(
                        t.timestamp >= since, t.timestamp < until, t.currency == "CNY"
                    )
                ).scalar()
        finally:
            store.close()
        assert next(x for x in as_json["totals"] if x["currency"] == "CNY")["cost_micros"] == int(cny)

        # A viewer of project `search`: its own rows in every report and format, nothing else.
        top = v.get("/reports/top", params={**params, "by": "project"}).json()["rows"]
        assert {r["project"] for r in top if r["row"] == "group"} == {"search"}
        mine = v.get("/reports/chargeback", params={"month": "2026-11"}).json()
        assert set(mine["departments"]) == {"rnd"} and mine["hardware"] == []
        assert {r["project"] for rows in mine["departments"].values() for r in rows if r["project"]} == {"search"}
        sheet = load_workbook(
            io.BytesIO(v.get("/reports/chargeback", params={"month": "2026-11", "format": "xlsx"}).content)
        )
        assert "marketing" not in sheet.sheetnames
        r = v.get("/reports/top", params={**params, "project": "campaign"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "out_of_scope"
        r = v.get("/reports/chargeback", params={"department": "marketing"})
        assert r.status_code == 403
        assert m.get("/reports/top").status_code == 403  # a member reads no reports
        r = a.get("/reports/top", params={"by": "planet"})
        assert r.status_code == 400 and "cannot rank by" in r.json()["error"]["message"]
        r = a.get("/reports/chargeback", params={"month": "2026-13"})
        assert r.status_code == 400 and "YYYY-MM" in r.json()["error"]["message"]
        r = a.get("/reports/peaks", params={"since": "2026-11-20", "until": "2026-11-10"})
        assert r.status_code == 400 and "after since" in r.json()["error"]["message"]
        paths = set(a.get("/openapi.json").json()["paths"])
        assert {f"/reports/{n}" for n in ("top", "peaks", "models", "suspicious", "drift", "chargeback")} <= paths
        for c in (a, v, m):
            c.close()
    finally:
        gw.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["top", "--by", "planet"], "cannot rank by 'planet'"),
        (["top", "--week", "--month"], "give one of --today, --week and --month"),
        (["top", "--until", "2026-11-01"], "--until needs --since"),
        (["peaks", "--metric", "bytes"], "peaks by tokens or requests"),
        (["chargeback", "--month", "November"], "expected YYYY-MM"),
        (["models", "--tz", "Mars/Olympus"], "unknown time zone"),
        (["drift", "--filter", "planet=x"], "cannot filter by 'planet'"),
        (["suspicious", "--factor", "1"], "--factor must be above 1"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    data = tmp_path / "data"
    Store(f"sqlite:///{data / 'ledger.db'}").close()
    r = subprocess.run([str(BIN), "report", *args, "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_cli_chargeback_table_and_csv(tmp_path):
    data = tmp_path / "data"
    store = Store(f"sqlite:///{data / 'ledger.db'}")
    try:
        store.usage.insert(make_records(random.Random(2), 400, MONTH_START, 30))
    finally:
        store.close()
    run = [str(BIN), "report", "chargeback", "--month", "2026-11", "--tz", ZONE, "--data-dir", str(data)]
    table = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "Chargeback 2026-11 (Asia/Shanghai)" in table.stdout
    assert "grand total" in table.stdout and "…" not in table.stdout
    rows = list(
        csv.DictReader(io.StringIO(subprocess.run([*run, "--format", "csv"], capture_output=True, text=True).stdout))
    )
    grand = {r["currency"]: r for r in rows if r["row"] == "grand total"}
    assert set(grand) == {"CNY", "USD", ""}
    # CSV holds amounts as plain numbers, exactly the micros (a spreadsheet sums them as numbers).
    for g in (grand["CNY"], grand["USD"]):
        assert Decimal(g["cost"]) * 1_000_000 == int(g["cost_micros"]) and g["cost"][0].isdigit()
    now = datetime.now(UTC)
    assert now.year >= 2026  # the default month is last month: it runs without --month too
    default = subprocess.run(run[:3] + run[5:] + ["--format", "json"], capture_output=True, text=True)
    assert default.returncode == 0 and json.loads(default.stdout)["month"] != ""

"""Month end as finance walks it, through the real CLI on a demo month: every report in every
format it offers, on a month with adjustments, hardware and several price versions, answers
without a traceback; an export is remembered, so a later correction to that month says so; and
days are cut in governance.timezone everywhere."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from conftest import BIN
from tokenabacus.billing.catalog import REPORTS

ZONE = "Asia/Shanghai"


def run(data, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [str(BIN), *args, "--data-dir", str(data["dir"]), "--config", str(data["config"])],
        capture_output=True,
        timeout=120,
    )
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    if ok:
        assert r.returncode == 0, (args, r.stderr.decode())
    return r


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    """A demo ledger with an adjustment, a hardware pool and a second price version in the month
    before now (in Beijing time), which the demo's traffic fills."""
    tmp = tmp_path_factory.mktemp("monthend")
    config = tmp / "c.yaml"
    config.write_text(f"governance:\n  timezone: {ZONE}\n")
    data = {"dir": tmp / "data", "config": config}
    run(data, "demo", "seed")
    db = sqlite3.connect(data["dir"] / "ledger.db")
    (first,) = db.execute("SELECT MIN(timestamp) FROM usage_records").fetchone()
    label = datetime.fromtimestamp(first / 1000, ZoneInfo(ZONE)).strftime("%Y-%m")
    mid = datetime.fromtimestamp(first / 1000, ZoneInfo(ZONE)) + timedelta(days=3)
    run(
        data,
        "prices",
        "set",
        "deepseek-v3",
        "--input",
        "2.2",
        "--output",
        "8.8",
        "--per",
        "1m",
        "--from",
        mid.strftime("%Y-%m-%dT%H:%M"),
    )
    run(data, "hardware", "set", "a100", "--models", "qwen2.5-7b-instruct", "--monthly", "60000", "--from", label)
    run(
        data,
        "costs",
        "adjust",
        "--month",
        label,
        "--department",
        "marketing",
        "--amount",
        "-120",
        "--reason",
        "load test billed by mistake",
    )
    data["month"], data["db"] = label, db
    return data


@pytest.mark.parametrize("entry", REPORTS, ids=lambda e: e.name)
def test_every_report_in_every_format(month, entry):
    span = ["--month", month["month"]] if entry.period is None else ["--since", month["month"] + "-01"]
    for fmt in entry.formats:
        out = run(month, "report", entry.name, *span, "--format", fmt).stdout
        if fmt == "json":
            assert json.loads(out) is not None
        elif fmt == "xlsx":
            book = openpyxl.load_workbook(io.BytesIO(out))
            assert book.sheetnames
        elif fmt == "csv":
            assert out.decode().splitlines()[0].count(",") >= 1
        else:
            assert out.strip()
    for fmt in ("table", "csv", "json", "xlsx"):
        run(month, "report", "--by", "department,day", "--since", month["month"] + "-01", "--format", fmt)


def test_a_correction_to_an_exported_month_says_so(month):
    run(
        month,
        "report",
        "chargeback",
        "--month",
        month["month"],
        "--format",
        "xlsx",
        "--output",
        str(month["dir"] / "cb.xlsx"),
    )
    r = run(
        month, "costs", "adjust", "--month", month["month"], "--department", "rd", "--amount", "5", "--reason", "missed"
    )
    assert f"note: {month['month']}'s chargeback was already exported" in r.stderr.decode()
    events = json.loads(run(month, "audit", "events", "--format", "json").stdout)
    assert any(e["action"] == "chargeback.export" and e["target_id"] == month["month"] for e in events)


def test_days_are_cut_in_the_operators_zone(month):
    rows = json.loads(run(month, "report", "--by", "day", "--since", month["month"] + "-01", "--format", "json").stdout)
    zone = ZoneInfo(ZONE)
    since = int(datetime.strptime(month["month"], "%Y-%m").replace(tzinfo=zone).timestamp() * 1000)
    per_day: dict[str, int] = {}
    for (ts,) in month["db"].execute("SELECT timestamp FROM usage_records WHERE timestamp >= ?", (since,)):
        day = datetime.fromtimestamp(ts / 1000, zone).strftime("%Y-%m-%d")
        per_day[day] = per_day.get(day, 0) + 1
    assert {r["day"]: r["requests"] for r in rows} == per_day
    latest = json.loads(run(month, "usage", "-n", "1", "--format", "json").stdout)[0]
    shown = run(month, "usage", "-n", "1").stdout.decode()
    at = datetime.fromtimestamp(latest["timestamp"] / 1000, UTC).astimezone(zone).isoformat(timespec="seconds")
    assert at in shown and at.endswith("+08:00")


def test_report_models_has_no_phantom_rows(month):
    """Refused requests to a priced model are its requests, not a `(no price)` row of 0 tokens."""
    since = month["month"] + "-01"
    rows = json.loads(run(month, "report", "models", "--since", since, "--format", "json").stdout)
    priced = {r["model"] for r in rows if r["currency"] is not None}
    assert not [r for r in rows if r["currency"] is None and (r["model"] in priced or not r["total_tokens"])]
    zone = ZoneInfo(ZONE)
    start = int(datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=zone).timestamp() * 1000)
    (n,) = month["db"].execute("SELECT COUNT(*) FROM usage_records WHERE timestamp >= ?", (start,)).fetchone()
    assert sum(r["requests"] for r in rows) == n

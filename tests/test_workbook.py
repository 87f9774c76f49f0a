"""The chargeback workbook as a Chinese finance team opens it, through the real CLI and over
HTTP: headers in the reader's language, money and prices as numeric cells with a currency's
number format (sums equal to the ledger's to the micro-unit), the hardware share in the amount
due, every sheet present (an empty one says so), frozen headers and columns that fit."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import openpyxl
import pytest

from conftest import BIN, GatewayProc
from tokenabacus.billing.exports import text_width

ZONE = "Asia/Shanghai"
MILLION = Decimal(1_000_000)
POOL = Decimal(60000)  # the a100 pool's monthly cost
CREDIT = Decimal(-120)  # marketing's correction


def run(data, *args: str | os.PathLike, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [str(BIN), *args, "--data-dir", str(data["dir"]), "--config", str(data["config"])],
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    if ok:
        assert r.returncode == 0, (args, r.stderr.decode())
    return r


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    """The demo ledger's month, with a hardware pool and a correction booked into it."""
    tmp = tmp_path_factory.mktemp("workbook")
    config = tmp / "c.yaml"
    config.write_text(f"governance:\n  timezone: {ZONE}\n")
    data = {"dir": tmp / "data", "config": config, "tmp": tmp}
    run(data, "demo", "seed")
    db = sqlite3.connect(data["dir"] / "ledger.db")
    (first,) = db.execute("SELECT MIN(timestamp) FROM usage_records").fetchone()
    label = datetime.fromtimestamp(first / 1000, ZoneInfo(ZONE)).strftime("%Y-%m")
    run(data, "hardware", "set", "a100", "--models", "qwen2.5-7b-instruct", "--monthly", str(POOL), "--from", label)
    credit = ("--department", "marketing", "--amount", str(CREDIT), "--reason", "load test billed by mistake")
    run(data, "costs", "adjust", "--month", label, *credit)
    doc = json.loads(run(data, "report", "chargeback", "--month", label, "--format", "json").stdout)
    cost = dict(
        db.execute(
            "SELECT currency, SUM(cost_micros) FROM usage_records WHERE timestamp >= ? AND timestamp < ?"
            " AND currency IS NOT NULL GROUP BY currency",
            (doc["since_ms"], doc["until_ms"]),
        ).fetchall()
    )
    db.close()
    data.update(month=label, doc=doc, cost=cost)
    return data


FIRST_HEADERS = {"行类型", "模型", "调整编号", "资源池", "Row", "Model", "Adjustment", "Pool"}


def table(ws) -> tuple[int, list[str], list[list]]:
    """(header row number, headers, the cells of the rows under it) of a sheet."""
    rows = list(ws.iter_rows())
    at = next(i for i, r in enumerate(rows) if r[0].value in FIRST_HEADERS and r[0].font.bold)
    return at + 1, [c.value for c in rows[at] if c.value is not None], [list(r) for r in rows[at + 1 :]]


def money(cell) -> Decimal:
    assert cell.data_type == "n" and cell.number_format.startswith('"¥"#,##0.00'), (cell.value, cell.number_format)
    return Decimal(str(cell.value))


def check_book(book: openpyxl.Workbook, data: dict, lang: str = "zh") -> None:
    depts = set(data["doc"]["departments"])
    assert book.sheetnames[0] == "汇总" and book.sheetnames[-3:] == ["价格版本", "调整", "硬件"]
    assert depts <= set(book.sheetnames)
    ledger = Decimal(data["cost"]["CNY"]) / MILLION
    for ws in book:
        at, headers, _ = table(ws)
        assert ws.freeze_panes == f"A{at + 1}", ws.title  # the header stays in view
        for j, h in enumerate(headers, start=1):
            width = ws.column_dimensions[openpyxl.utils.get_column_letter(j)].width
            assert width > text_width(h), (ws.title, h, width)  # CJK characters count double
    _, headers, rows = table(book["汇总"])
    assert headers[:3] == ["行类型", "部门", "请求数"] and {"费用", "调整", "硬件分摊", "应付金额"} <= set(headers)
    col = {h: i for i, h in enumerate(headers)}
    cny = [r for r in rows if r[col["币种"]].value == "CNY"]
    groups = [r for r in cny if r[col["行类型"]].value is None]
    (grand,) = [r for r in cny if r[col["行类型"]].value == "总计"]
    assert grand[0].font.bold
    # Numeric money, exact: the departments' costs add up to the ledger's sum to the micro-unit.
    assert sum(money(r[col["费用"]]) for r in groups) == ledger == money(grand[col["费用"]])
    for r in [*groups, grand]:
        due = money(r[col["费用"]]) + money(r[col["调整"]]) + money(r[col["硬件分摊"]])
        assert money(r[col["应付金额"]]) == due
        assert r[col["请求数"]].data_type == "n" and r[col["请求数"]].number_format == "#,##0"
    assert money(grand[col["调整"]]) == CREDIT and money(grand[col["硬件分摊"]]) == POOL
    assert money(grand[col["应付金额"]]) == ledger + CREDIT + POOL
    # A department's sheet: readable row labels, numbers as numbers.
    _, headers, rows = table(book["marketing"])
    assert headers[:4] == ["行类型", "项目", "用户", "模型"]
    labels = {r[0].value for r in rows}
    assert {"小计", "部门合计"} <= labels and "subtotal" not in labels and "group" not in labels
    # Prices are numbers in the currency's format, not text like '¥1000'.
    _, headers, rows = table(book["价格版本"])
    assert "输入单价（每百万 tokens）" in headers
    price = rows[0][headers.index("输入单价（每百万 tokens）")]
    assert money(price) > 0
    _, headers, rows = table(book["调整"])
    assert money(rows[0][headers.index("金额")]) == CREDIT
    _, headers, rows = table(book["硬件"])
    assert sum(money(r[headers.index("费用")]) for r in rows if r[0].value) == POOL


def test_the_cli_writes_the_workbook_in_chinese(month):
    out = month["tmp"] / "cb-zh.xlsx"
    run(month, "report", "chargeback", "--month", month["month"], "--format", "xlsx", "--lang", "zh", "--output", out)
    check_book(openpyxl.load_workbook(out), month)


def test_the_admin_api_writes_the_same_workbook(month):
    gw = GatewayProc(month["dir"], {"governance": {"timezone": ZONE}}).start()
    try:
        r = httpx.get(
            f"http://127.0.0.1:{gw.port}/admin/reports/chargeback",
            params={"month": month["month"], "format": "xlsx", "lang": "zh"},
            headers={"Authorization": f"Bearer {gw.admin_key}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        check_book(openpyxl.load_workbook(io.BytesIO(r.content)), month)
        bad = httpx.get(
            f"http://127.0.0.1:{gw.port}/admin/reports/chargeback",
            params={"month": month["month"], "format": "xlsx", "lang": "fr"},
            headers={"Authorization": f"Bearer {gw.admin_key}"},
            timeout=60,
        )
        assert bad.status_code in (400, 422)
    finally:
        gw.stop()


def test_the_language_follows_the_locale(month):
    out = month["tmp"] / "cb-locale.xlsx"
    args = ("report", "chargeback", "--month", month["month"], "--format", "xlsx", "--output", str(out))
    run(month, *args, env={"LANG": "zh_CN.UTF-8", "LC_ALL": ""})
    assert openpyxl.load_workbook(out).sheetnames[0] == "汇总"
    run(month, *args, env={"LANG": "en_US.UTF-8", "LC_ALL": ""})
    book = openpyxl.load_workbook(out)
    assert book.sheetnames[0] == "Summary" and book.sheetnames[-3:] == ["Price versions", "Adjustments", "Hardware"]
    r = run(month, "report", "chargeback", "--month", month["month"], "--lang", "fr", ok=False)
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1


def test_every_sheet_is_there_when_the_month_has_no_corrections_or_hardware(month):
    before = f"{int(month['month'][:4]) - 1}-{month['month'][5:]}"  # a year earlier: nothing at all
    out = month["tmp"] / "cb-empty.xlsx"
    for lang, none, names in (("zh", "无", ["调整", "硬件"]), ("en", "none", ["Adjustments", "Hardware"])):
        run(month, "report", "chargeback", "--month", before, "--format", "xlsx", "--lang", lang, "--output", str(out))
        book = openpyxl.load_workbook(out)
        for name in names:
            _, _, rows = table(book[name])
            assert [r[0].value for r in rows] == [none], name


def test_json_and_csv_carry_the_hardware_in_the_amount_due(month):
    doc, cost = month["doc"], month["cost"]
    (cny,) = [t for t in doc["totals"] if t["currency"] == "CNY"]
    assert cny["cost_micros"] == cost["CNY"]
    assert cny["hardware_micros"] == int(POOL * MILLION) and cny["adjustments_micros"] == int(CREDIT * MILLION)
    assert cny["amount_due_micros"] == cost["CNY"] + int(CREDIT * MILLION) + int(POOL * MILLION)
    # Each department owes its own share: the hardware sheet's rows for it, summed.
    share: dict[str, int] = {}
    for h in doc["hardware"]:
        share[h["department"]] = share.get(h["department"], 0) + h["cost_micros"]
    for s in doc["summary"]:
        if s["row"] == "group" and s["currency"] == "CNY":
            assert s["hardware_micros"] == share.get(s["department"], 0)
            assert s["amount_due_micros"] == s["cost_micros"] + s["adjustments_micros"] + s["hardware_micros"]
    text = run(month, "report", "chargeback", "--month", month["month"], "--format", "csv").stdout.decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    (grand,) = [r for r in rows if r["row"] == "grand total" and r["currency"] == "CNY"]
    assert Decimal(grand["hardware"]) == POOL and int(grand["amount_due_micros"]) == cny["amount_due_micros"]
    table_out = run(month, "report", "chargeback", "--month", month["month"], "--wide").stdout.decode()
    assert "¥60,000.00" in table_out

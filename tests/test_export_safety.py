"""Exports cannot be turned against the people who open them, and edge input is a clear refusal.

A member puts formulas where the ledger keeps caller text (a refused model name, its User-Agent)
and an admin names the organization after formulas; every export (CSV and xlsx, over /admin for
an admin and for a viewer, and from the CLI) keeps that text as text: no workbook cell is a
formula, and a CSV field a spreadsheet would run starts with OWASP's single quote, while numbers
(a -120.5 credit) stay numbers. Terminal tables show such text, never act on it. Dates at the
edges of the calendar and text that is not UTF-8 are one-line errors (exit 2) and 400s.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import time
from datetime import UTC, datetime

import httpx
import pytest
from openpyxl import load_workbook

from conftest import GatewayProc
from tokenabacus.billing.cells import csv_field, formula_like
from tokenabacus.billing.exports import Sheet, csv_text, xlsx_bytes
from tokenabacus.calendar import now_ms
from tokenabacus.ledger.record import new_request_id, start_record

DEPT = "=1+2"
PROJECT = "@SUM(1,1)"
USER = "-2+3"
MODEL = '=HYPERLINK("http://evil.example/m","m")'
AGENT = '=HYPERLINK("http://evil.example/u","u")'
REASON = "=cmd|' /C calc'!A0"
MARKUP = "[/x] [bold]B \x1b[2J"  # Rich markup and a terminal escape (clear screen)
CONTROL = "ctl\x01\x1f"  # characters XML cannot hold
FORMULAS = [DEPT, PROJECT, USER, MODEL, AGENT, REASON]
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
AMOUNT = re.compile(r"[+-]?[$¥€£]?\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+)?(?: [A-Z]{3})?")


# What every export must look like ---------------------------------------------------------------
def check_csv(text: str, expect: list[str]) -> list[dict]:
    """No field starts as a formula (amounts may start with a minus); each of ``expect`` is there
    behind OWASP's quote, otherwise unchanged."""
    rows = list(csv.DictReader(io.StringIO(text)))
    fields = [v for r in rows for v in r.values() if v]
    for f in fields:
        assert not f.startswith(TRIGGERS) or AMOUNT.fullmatch(f), f
    for e in expect:
        assert "'" + e in fields, (e, text[:2000])
    return rows


def check_xlsx(data: bytes, expect: list[str]):
    """No cell of any sheet is a formula; text a spreadsheet would run is text, quote-prefixed,
    and each of ``expect`` is there exactly."""
    wb = load_workbook(io.BytesIO(data))
    texts = set()
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (ws.title, cell.coordinate, cell.value)
                if isinstance(cell.value, str):
                    texts.add(cell.value)
                    if cell.value.startswith(TRIGGERS) and not AMOUNT.fullmatch(cell.value):
                        assert cell.data_type == "s" and cell.quotePrefix, (ws.title, cell.coordinate)
    for e in expect:
        assert e in texts, (e, sorted(texts)[:50])
    return wb


def served(days: int) -> list[dict]:
    """Requests the member had served, one a day for ``days`` days up to an hour ago (so the
    forecast has a history): records as the writer stores them."""
    out = []
    for d in range(days):
        rec = start_record(model=MODEL, endpoint="/v1/chat/completions", user=USER, project=PROJECT, department=DEPT)
        rec.request_id, rec.timestamp = new_request_id(), now_ms() - 3_600_000 - d * 86_400_000
        rec.status, rec.usage_source, rec.user_agent = "ok", "tokenizer", AGENT
        rec.prompt_tokens, rec.completion_tokens, rec.total_tokens = 100, 20, 120
        rec.price_version, rec.currency, rec.cost_micros = "pv_test", "CNY", 120_000
        out.append(rec.to_dict())
    return out


# One gateway with a hostile member, a hostile organization and a viewer -------------------------
@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    gw = GatewayProc(tmp_path_factory.mktemp("exports") / "data").start()
    admin = httpx.Client(
        base_url=f"http://127.0.0.1:{gw.port}/admin", headers={"Authorization": f"Bearer {gw.admin_key}"}, timeout=60
    )
    try:
        for path, body in [
            ("/org/departments", {"name": DEPT}),
            ("/org/projects", {"name": PROJECT, "department": DEPT}),
            ("/org/users", {"name": USER, "project": PROJECT}),
        ]:
            assert admin.post(path, json=body).status_code == 201
        made = admin.post("/keys", json={"user": USER, "project": PROJECT, "department": DEPT})
        assert made.status_code == 201, made.text
        member = made.json()["key"]
        made = admin.post("/keys", json={"role": "viewer", "scope": {"kind": "department", "value": DEPT}})
        assert made.status_code == 201, made.text
        viewer = made.json()["key"]
        with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {member}"}, timeout=60) as v1:
            for model, agent in [(MODEL, AGENT), (MARKUP, "curl/8"), (CONTROL, "curl/8")]:
                r = v1.post(
                    "/chat/completions",
                    json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                    headers={"User-Agent": agent},
                )
                assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        limit = {"scope": "project", "name": PROJECT, "tokens": 1_000_000, "period": "day"}
        assert admin.post("/quotas", json=limit).status_code == 201
        ask = {"scope": "project", "name": PROJECT, "tokens": 1000, "reason": REASON}
        r = httpx.post(
            f"http://127.0.0.1:{gw.port}/admin/quota-requests",
            json=ask,
            headers={"Authorization": f"Bearer {member}"},
            timeout=60,
        )
        assert r.status_code == 201, r.text
        credit = {"department": DEPT, "amount": "-120.5", "currency": "CNY", "reason": "@refund"}
        assert admin.post("/cost-adjustments", json=credit).status_code == 201
        store = gw.store()
        try:
            store.usage.insert(served(20))
            store.alerts.claim(
                {
                    "rule": "spike",
                    "kind": "spike",
                    "scope": f"project={PROJECT}",
                    "period": "today",
                    "fired_at": now_ms(),
                    "severity": "warning",
                    "figure": 10.0,
                    "baseline": 1.0,
                    "threshold": 3.0,
                    "message": REASON,
                },
                [],
            )
        finally:
            store.close()
        deadline = time.monotonic() + 15
        while len(admin.get("/usage").json()) < 23:  # 20 served, and the 3 refused once the writer moves them
            assert time.monotonic() < deadline, "the refused requests never reached the ledger"
            time.sleep(0.05)
        yield gw, admin, viewer
    finally:
        admin.close()
        gw.stop()


def get(client: httpx.Client, path: str, **params) -> httpx.Response:
    r = client.get(path, params=params)
    assert r.status_code == 200, (path, params, r.text)
    return r


MONTH = datetime.now(UTC).strftime("%Y-%m")
# Each /admin export and the caller text it shows.
HTTP_EXPORTS = [
    ("/usage", {}, [MODEL, AGENT, USER, PROJECT, DEPT]),
    ("/report", {"by": "department,project,user,model", "totals": "true"}, [MODEL, USER, PROJECT, DEPT]),
    ("/reports/top", {"by": "model"}, [MODEL]),
    ("/reports/top", {"by": "user"}, [USER]),
    ("/reports/models", {}, [MODEL]),
    ("/reports/suspicious", {"by": "user", "factor": 1.5, "min_requests": 1, "min_tokens": 1}, [USER]),
    ("/reports/drift", {}, [MODEL]),
    ("/reports/chargeback", {"month": MONTH}, [DEPT, PROJECT, USER, MODEL]),
    ("/quotas/status", {}, [PROJECT]),
    ("/quota-requests", {}, [PROJECT, REASON]),
    ("/forecast", {}, [PROJECT]),
    ("/alerts", {}, [REASON]),
]


@pytest.mark.parametrize(("path", "params", "expect"), HTTP_EXPORTS, ids=[f"{p}{q}" for p, q, _ in HTTP_EXPORTS])
def test_admin_exports_keep_caller_text_as_text(hostile, path, params, expect):
    _, admin, _ = hostile
    check_csv(get(admin, path, **params, format="csv").text, expect)
    r = get(admin, path, **params, format="xlsx")
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    check_xlsx(r.content, expect)


def test_the_chargeback_workbook_keeps_names_as_text_and_money_as_numbers(hostile):
    _, admin, _ = hostile
    book = get(admin, "/reports/chargeback", month=MONTH, format="xlsx", lang="en").content
    wb = check_xlsx(book, [DEPT, "@refund"])
    assert DEPT in wb.sheetnames  # a sheet per department, named as it is
    heading = wb[DEPT]["A1"]
    assert heading.value.startswith(DEPT) and heading.data_type == "s"
    adj = wb["Adjustments"]
    header = [c.value for c in adj[1]]
    row = list(adj[2])
    amount = row[header.index("Amount")]
    assert amount.data_type == "n" and amount.value == -120.5  # a credit, still a number
    assert amount.number_format.startswith('"¥"#,##0.00')  # shown as money, kept exact
    assert row[header.index("Department")].value == DEPT
    rows = check_csv(get(admin, "/reports/chargeback", month=MONTH, format="csv").text, [DEPT])
    mine = [r for r in rows if r["department"] == "'" + DEPT and r["adjustments_micros"]]
    assert mine and mine[0]["adjustments_micros"] == "-120500000"  # numbers are never quoted
    assert mine[0]["adjustments"] == "-120.50"  # nor an amount (a plain number, not a formula quote)


def test_a_viewer_gets_the_same_safe_files(hostile):
    gw, _, viewer = hostile
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{gw.port}/admin", headers={"Authorization": f"Bearer {viewer}"}, timeout=60
    )
    with client:
        check_xlsx(get(client, "/reports/models", format="xlsx").content, [MODEL])
        check_xlsx(get(client, "/usage", format="xlsx").content, [MODEL, AGENT, DEPT])
        check_csv(get(client, "/report", by="project,user,model", format="csv").text, [MODEL, USER, PROJECT])
        check_xlsx(get(client, "/reports/top", by="department", format="xlsx").content, [DEPT])


def test_text_xml_cannot_hold_is_shown_not_a_500(hostile):
    _, admin, _ = hostile
    check_xlsx(get(admin, "/usage", format="xlsx").content, ["ctl\\x01\\x1f"])
    rows = check_csv(get(admin, "/usage", model=CONTROL, format="csv").text, [])
    assert [r["model"] for r in rows] == [CONTROL]  # CSV holds it as it is


def cli(gw: GatewayProc, *args: str) -> subprocess.CompletedProcess:
    r = gw.cli(*args, check=False)
    assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)
    return r


CLI_EXPORTS = [
    (["report", "--by", "department,project,user,model"], [MODEL, USER, PROJECT, DEPT]),
    (["report", "top", "--by", "model"], [MODEL]),
    (["report", "models"], [MODEL]),
    (["report", "chargeback", "--month", MONTH], [DEPT, PROJECT, USER, MODEL]),
]


@pytest.mark.parametrize(("args", "expect"), CLI_EXPORTS, ids=[" ".join(a[:2]) for a, _ in CLI_EXPORTS])
def test_cli_report_exports_keep_caller_text_as_text(hostile, tmp_path, args, expect):
    gw, _, _ = hostile
    check_csv(cli(gw, *args, "--format", "csv").stdout, expect)
    out = tmp_path / "out.xlsx"
    cli(gw, *args, "--format", "xlsx", "--output", str(out))
    check_xlsx(out.read_bytes(), expect)


def test_cli_lists_as_csv_are_neutralized_too(hostile):
    gw, _, _ = hostile
    check_csv(cli(gw, "usage", "--format", "csv").stdout, [MODEL, AGENT, USER, PROJECT, DEPT])
    check_csv(cli(gw, "keys", "list", "--format", "csv").stdout, [USER, PROJECT, DEPT])
    check_csv(cli(gw, "quota", "requests", "--format", "csv").stdout, [PROJECT, REASON])


def test_terminal_tables_show_markup_and_escapes_as_text(hostile):
    gw, _, _ = hostile
    for args in (["usage"], ["report", "--by", "model"], ["report", "models"]):
        out = cli(gw, *args).stdout
        assert "\x1b" not in out and "\x01" not in out, args
        assert "[/x] [bold]B \\x1b[2J" in out, (args, out)  # Rich markup printed, escape shown
        assert "ctl\\x01\\x1f" in out


def test_cells_policy():
    """The rule itself, on the values that need care: formulas quoted, amounts left alone."""
    for text in [*FORMULAS, "\tx", "\rx", "+1+1", "-1-1", "@x", "-¥1+1"]:
        assert formula_like(text) and csv_field(text) == "'" + text
    for value in ["-120.5", "-¥120.500000", "-12.345678 JPY", "+3", "1e5", "plain", "a=b", -120.5, 7, None]:
        assert csv_field(value) == value
    text = csv_text([{"a": "=1", "b": -5, "c": "-5"}], ["a", "b", "c"])
    assert text.splitlines()[1] == "'=1,-5,-5"
    wb = check_xlsx(xlsx_bytes([Sheet("=s", ["a", "b"], [{"a": "=1+1", "b": -5}], ["=head"])]), ["=1+1", "=head"])
    assert wb.active["B4"].value == -5 and wb.active["B4"].data_type == "n"


# Item 13: edges of the calendar and text that is not UTF-8 --------------------------------------
RANGE = "is out of range: give a"  # not Python's own "year 0 is out of range"


def one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["report", "--by", "project,day", "--since", "0001-01-01", "--until", "9999-12-31"],
            "--since '0001-01-01' is out of range: give a date from 1970-01-01 to 9998-12-31",
        ),
        (["report", "--by", "month", "--until", "9999-12-31"], "--until '9999-12-31' is out of range: give a"),
        (["report", "top", "--since", "0001-01-01"], RANGE),
        (["report", "chargeback", "--month", "9999-12"], "month '9999-12' is out of range: give a"),
        (["report", "peaks", "--since", "2026-01-01", "--until", "9999-12-31"], RANGE),
        (["usage", "--since", "0001-01-01"], RANGE),
        (["forecast", "--as-of", "0001-01-01"], RANGE),
        (["hardware", "apportion", "--month", "9999-12"], RANGE),
        (["org", "department", "add", "\udced\udca0\udc80"], "argument 4 is not valid UTF-8"),
    ],
)
def test_cli_edges_are_one_line_errors(hostile, args, needle):
    gw, _, _ = hostile
    one_line_error(gw.cli(*args, check=False), needle)


def test_a_window_of_eight_thousand_years_is_the_ledgers_own(hostile):
    """In range but absurdly wide: the report plans the days that hold records, quickly, and
    equals the report with no window at all."""
    _, admin, _ = hostile
    started = time.monotonic()
    wide = get(admin, "/report", by="project,day", since="1970-01-01", until="9998-12-31").json()
    assert wide == get(admin, "/report", by="project,day").json() and wide
    assert time.monotonic() - started < 10


def bad_request(r: httpx.Response, needle: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and needle in err["message"], err


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/report", {"until": "9999-12-31", "by": "day"}),
        ("/report", {"since": "0001-01-01", "by": "month"}),
        ("/report", {"until": "9999-12-31T23:59:59-12:00", "by": "hour"}),
        ("/report", {"month": "9999-12"}),
        ("/reports/top", {"month": "0001-01"}),
        ("/reports/peaks", {"since": "0001-01-01"}),
        ("/reports/chargeback", {"month": "9999-12"}),
        ("/usage", {"since": "0001-01-01"}),
        ("/alerts", {"since": "9999-12-31"}),
        ("/forecast", {"as_of": "0001-01-01"}),
        ("/hardware/apportion", {"month": "9999-12"}),
        ("/cost-adjustments", {"until": "9999-12-31"}),
        ("/prices", {"at": "0001-01-01"}),
    ],
)
def test_admin_date_edges_are_400s(hostile, path, params):
    _, admin, _ = hostile
    bad_request(admin.get(path, params=params), RANGE)


def test_a_bill_dated_at_the_edge_is_a_400(hostile):
    _, admin, _ = hostile
    r = admin.post(
        "/reconcile", content=b"date,model,tokens,amount\n9999-12-31,m,1,1\n", headers={"content-type": "text/csv"}
    )
    bad_request(r, "line 2: date '9999-12-31' is out of range")


NAME_POSTS = [
    ("post", "/org/departments", {"name": "X"}),
    ("post", "/org/projects", {"name": "X", "department": DEPT}),
    ("post", "/org/users", {"name": "X", "department": DEPT}),
    ("patch", f"/org/users/{USER}", {"department": "X"}),
    ("post", "/keys", {"user": USER, "project": PROJECT, "department": DEPT, "name": "X"}),
    ("post", "/quotas", {"scope": "project", "name": "X", "tokens": 5, "period": "day"}),
    ("post", "/quota-requests", {"scope": "project", "name": PROJECT, "tokens": 5, "reason": "X"}),
    ("post", "/prices", {"model": "X", "per": "1m", "input": "1", "output": "2"}),
    ("post", "/cost-adjustments", {"department": DEPT, "amount": "1", "reason": "X"}),
    ("post", "/hardware", {"pool": "p", "models": ["X"], "monthly": "100"}),
]


@pytest.mark.parametrize("raw", [False, True], ids=["escaped", "raw-bytes"])
@pytest.mark.parametrize(("method", "path", "body"), NAME_POSTS, ids=[f"{m} {p}" for m, p, _ in NAME_POSTS])
def test_a_lone_surrogate_is_a_400_and_writes_nothing(hostile, method, path, body, raw):
    """JSON's \\ud800 escape, or its raw bytes ED A0 80, decodes to text no database can hold."""
    _, admin, _ = hostile
    before = {p: admin.get(p).json() for p in ("/org/departments", "/org/users", "/keys", "/quotas")}
    text = json.dumps(body).replace('"X"', '"\\ud800"')
    content = text.replace("\\ud800", "\ud800").encode("utf-8", "surrogatepass") if raw else text.encode()
    assert (b"\xed\xa0\x80" in content) == raw
    r = admin.request(method, path, content=content, headers={"content-type": "application/json"})
    bad_request(r, "must be valid UTF-8")
    assert {p: admin.get(p).json() for p in before} == before

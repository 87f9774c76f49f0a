"""The web console driven as a person would, in headless Chromium (Debian's, driven by Playwright):
sign in, read the board and check its figures against the ledger, filter the request log and
open one request, approve and deny quota requests, export a CSV and compare it with the CLI's,
switch the language, and check that a viewer of one project sees nothing of another, by any
page, URL or export. Sign-out, a wrong key and CSRF are checked from the outside too. Month end
and the operator's round (issue 20): a past month's chargeback on the finance page against the
CLI's and the ledger's, with a correction and hardware dated into it; the board's last month and
a chosen range; the log by department; a key created, used on /v1 and revoked; a limit set and
deleted; and the Chinese console (errors, alerts, dates and money in its own words).

One gateway serves the module: a ledger filled by `tokenabacus demo seed`, plus real requests
through the openai SDK to the embedded model from two projects of a department "qa".
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from conftest import EMBEDDED, IN_CI, GatewayProc
from tokenabacus.billing import windows
from tokenabacus.ledger.schema import usage_records as t

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails under CI) with the reason
    expect = None

CHROMIUM = Path("/usr/bin/chromium")
ZONE = "Asia/Shanghai"
SAY = [{"role": "user", "content": "Say hi"}]


def _need(ok: bool, why: str) -> None:
    """Skip without the browser, except under CI where a missing browser is a failure."""
    if not ok:
        if IN_CI:
            pytest.fail(f"{why} under CI")
        pytest.skip(why)


@dataclass
class Site:
    gw: GatewayProc
    base: str
    viewer_key: str  # a viewer of project console-a
    members: dict[str, str]  # project -> a member key of it
    real_ids: dict[str, list[str]]  # project -> request ids sent through the SDK


@pytest.fixture(scope="module")
def browser():
    _need(CHROMIUM.exists(), f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, browser) -> Site:
    tmp = tmp_path_factory.mktemp("console-browser")
    gw = GatewayProc(tmp / "data", {"governance": {"timezone": ZONE}})
    gw.cli("demo", "seed", "--records", "3000")
    gw.start()
    try:
        members = {
            "console-a": gw.create_key(user="ann", project="console-a", department="qa"),
            "console-b": gw.create_key(user="bob", project="console-b", department="qa"),
        }
        real: dict[str, list[str]] = {}
        for project, key in members.items():
            client = gw.client(key)
            for i in range(3):
                raw = client.chat.completions.with_raw_response.create(
                    model=EMBEDDED, messages=SAY, max_tokens=4 + i, temperature=0
                )
                real.setdefault(project, []).append(raw.headers["x-request-id"])
        for ids in real.values():
            for rid in ids:
                gw.record(rid)  # in the ledger before any page reads it
        out = gw.cli("keys", "create", "--role", "viewer", "--project", "console-a", "--name", "viewer-a", "--json")
        yield Site(gw, gw.base_url.removesuffix("/v1"), json.loads(out.stdout)["key"], members, real)
    finally:
        gw.stop()


# Helpers ----------------------------------------------------------------------------------------
class Tab:
    """A signed-in browser tab and the errors its page logged (a page error fails the test)."""

    def __init__(self, browser, base: str, locale: str = "en-US") -> None:
        self.base = base
        # The browser's own zone differs from the operator's: the page must show the operator's.
        self.context = browser.new_context(
            locale=locale,
            timezone_id="America/New_York",
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def sign_in(self, key: str, lang: str | None = "en") -> Tab:
        p = self.page
        p.goto(f"{self.base}/console/login")
        if lang:
            p.evaluate("l => localStorage.setItem('tokenabacus.lang', l)", lang)
        p.fill("input[name=key]", key)
        p.click("button[type=submit]")
        p.wait_for_url(re.compile(r".*/console/(#.*)?$"))
        p.wait_for_selector("#who .role")
        self.settle(None)
        return self

    def navigate(self, action, page_name: str) -> None:
        """Do something that changes the page (follow a link, submit the filters), then wait for
        the new page: the marks of the old one are cleared first, so it cannot pass for the new."""
        self.page.evaluate("() => { document.getElementById('main').dataset.page = ''; }")
        action()
        self.settle(page_name)

    def open(self, route: str, page_name: str | None = None) -> None:
        name = page_name or route.split("/")[0].split("?")[0]
        self.navigate(lambda: self.page.goto(f"{self.base}/console/#/{route}"), name)

    def settle(self, page_name: str | None) -> None:
        self.page.wait_for_selector(f"#main[data-page={page_name}]" if page_name else "#main[data-page]")
        self.page.wait_for_function("() => !document.querySelector('#main .loading')")

    def rows(self, table: str) -> list:
        return self.page.locator(f"table[data-table={table}] tbody tr").all()

    def banner(self) -> str:
        self.page.wait_for_selector("#banner:not([hidden])")
        return self.page.inner_text("#banner-text")

    def close(self) -> None:
        assert not self.errors, f"the page logged errors: {self.errors}"
        self.context.close()


@pytest.fixture
def tabs(browser, site):
    opened: list[Tab] = []

    def make(locale: str = "en-US") -> Tab:
        tab = Tab(browser, site.base, locale)
        opened.append(tab)
        return tab

    yield make
    for tab in opened:
        tab.close()


def cell_value(row, col: str) -> int | None:
    v = row.locator(f"[data-col={col}]").first.get_attribute("data-value")
    return None if v is None else int(v)


def ledger(site: Site, query):
    store = site.gw.store()
    try:
        with store.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(query)]
    finally:
        store.close()


def admin(site: Site, method: str, path: str, key: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or site.gw.admin_key}"}
    return httpx.request(method, f"{site.base}/admin{path}", headers=headers, timeout=60, **kw)


# The board --------------------------------------------------------------------------------------
def test_board_department_ranking_equals_the_ledger(site, tabs):
    tab = tabs().sign_in(site.gw.admin_key)
    tab.navigate(lambda: tab.page.click("nav.tabs a[data-page=board]"), "board")
    shown = {
        tr.get_attribute("data-key"): (cell_value(tr, "total_tokens"), cell_value(tr, "cost_micros"))
        for tr in tab.rows("top-department")
    }
    # The CLI's report of the same week, in the same zone ...
    cli = json.loads(site.gw.cli("report", "top", "--by", "department", "--week", "--format", "json").stdout)
    assert shown == {(r["department"] or ""): (r["total_tokens"], r["cost_micros"]) for r in cli if r["row"] == "group"}
    # ... and the ledger's own sums over the week's records.
    win = windows.window(ZONE, "week")
    rows = ledger(
        site,
        select(
            t.c.department,
            t.c.currency,
            func.sum(t.c.total_tokens).label("tokens"),
            func.sum(t.c.cost_micros).label("cost"),
        )
        .where(t.c.timestamp >= win.since_ms, t.c.timestamp < win.until_ms)
        .group_by(t.c.department, t.c.currency),
    )
    tokens: dict[str, int] = defaultdict(int)
    cost: dict[str, int] = defaultdict(int)
    for r in rows:
        dept = r["department"] or ""
        tokens[dept] += int(r["tokens"] or 0)
        if r["currency"] == "CNY":
            cost[dept] += int(r["cost"])
    assert {k: v[0] for k, v in shown.items()} == dict(tokens)
    assert {k: v[1] for k, v in shown.items() if v[1] is not None} == dict(cost)
    total = tab.page.locator("table[data-table=top-department] tfoot tr")
    assert cell_value(total, "total_tokens") == sum(tokens.values())
    assert cell_value(total, "cost_micros") == sum(cost.values())
    assert "¥" in total.locator("[data-col=cost_micros]").inner_text()
    # Each section of the board drew: the heatmap and every table, with no error banner.
    tab.page.wait_for_selector("[data-section=peaks] canvas")
    for name in ("top-project", "top-user", "peaks", "models", "forecast", "alerts"):
        assert tab.page.locator(f"[data-table={name}]").count() == 1, name
    assert tab.page.locator("#banner").is_hidden()
    # Ranking by cost reorders the same figures and exports the same order.
    tab.navigate(lambda: tab.page.click("[data-name=rank] button[data-value=cost]"), "board")
    assert "rank=cost" in tab.page.url
    by_cost = [tr.get_attribute("data-key") for tr in tab.rows("top-department")]
    assert by_cost == [(r["department"] or "") for r in sorted(cli[:-1], key=lambda r: r["cost_rank"] or 1e9)]
    href = tab.page.get_attribute("[data-section=top-department] a.export[data-format=csv]", "href")
    assert "rank=cost" in href and "format=csv" in href


def test_overview_shows_the_figures_the_api_returned(site, tabs):
    tab = tabs()
    with tab.page.expect_response(lambda r: "/admin/reports/overview" in r.url) as got:
        tab.sign_in(site.gw.admin_key)
    data = got.value.json()
    tab.settle("overview")
    for period in ("today", "month"):
        fig = data[period]["current"]
        group = tab.page.locator(f".kpi-group[data-period={period}]")
        for metric in ("total_tokens", "requests"):
            v = group.locator(f".kpi[data-metric={metric}] .kpi-value").get_attribute("data-value")
            assert int(v) == fig[metric], (period, metric)
        cny = next(c["cost_micros"] for c in fig["costs"] if c["currency"] == "CNY")
        assert int(group.locator(".kpi[data-metric=cost] .kpi-value").get_attribute("data-value")) == cny
    tab.page.wait_for_selector("#daily-chart canvas")


def test_money_is_formatted_without_losing_a_digit(site, tabs):
    """The page's formatter against a decimal reference: the currency's minor units (2 for CNY)
    in every cell, half up, thousands separators, exact up to 10^12 micros and past 2^53; unit
    prices keep four decimals, the same in every row."""

    def reference(micros: int, decimals: int = 2) -> str:
        q = (Decimal(abs(micros)) / 1_000_000).quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_UP)
        sign = "-" if micros < 0 and q != 0 else ""
        return f"{sign}¥{q:,.{decimals}f}"

    values = [0, 1, 8, 800, 999, 4_999, 5_000, 123_456, 999_994, 999_995, 999_999, 1_000_000, 1_005_000]
    values += [1_004_999, 1_234_567_890, 10**12 - 1, 10**12, 10**12 + 5_000, -2_500_000, -800, -4_999]
    values += [9_007_199_254_740_993]
    tab = tabs().sign_in(site.gw.admin_key)
    got = tab.page.evaluate(
        """async (vs) => {
            const f = await import('/console/static/format.js');
            return [vs.map((v) => f.fmtMoney(BigInt(v), 'CNY')), vs.map((v) => f.fmtPrice(BigInt(v), 'CNY'))];
        }""",
        [str(v) for v in values],
    )
    assert got == [[reference(v) for v in values], [reference(v, 4) for v in values]]
    assert reference(1_234_567_890) == "¥1,234.57" and reference(800, 4) == "¥0.0008" and reference(-800) == "¥0.00"


# The request log --------------------------------------------------------------------------------
def test_request_log_filters_pages_and_opens_one_request(site, tabs):
    tab = tabs().sign_in(site.gw.admin_key)
    tab.open("requests")
    # The busiest demo project's successful requests fill more than a page.
    busiest = ledger(
        site,
        select(t.c.project, func.count().label("n"))
        .where(t.c.status == "ok", t.c.project.is_not(None))
        .group_by(t.c.project)
        .order_by(func.count().desc())
        .limit(1),
    )[0]
    assert busiest["n"] > 50
    form = "form[data-form=filters]"
    tab.page.fill(f"{form} input[name=project]", busiest["project"])
    tab.page.select_option(f"{form} select[name=status]", "ok")
    tab.navigate(lambda: tab.page.click(f"{form} button[type=submit]"), "requests")
    assert re.search(r"#/requests\?project=.*status=ok", tab.page.url)

    def expected(offset: int) -> list[str]:
        q = (
            select(t.c.request_id)
            .where(t.c.project == busiest["project"], t.c.status == "ok")
            .order_by(t.c.timestamp.desc(), t.c.id.desc())
            .limit(50)
            .offset(offset)
        )
        return [r["request_id"] for r in ledger(site, q)]

    assert [tr.get_attribute("data-key") for tr in tab.rows("requests")] == expected(0)
    tab.navigate(lambda: tab.page.click("nav.pager a[rel=next]"), "requests")
    assert "page=1" in tab.page.url
    assert [tr.get_attribute("data-key") for tr in tab.rows("requests")] == expected(50)

    # A time window, typed in the operator's zone ("until" exclusive).
    some = ledger(site, select(t.c.timestamp).order_by(t.c.timestamp.desc()).offset(500).limit(1))[0]["timestamp"]
    start = datetime.fromtimestamp(some / 1000, ZoneInfo(ZONE)).replace(second=0, microsecond=0)
    since, until = start - timedelta(minutes=10), start + timedelta(minutes=10)
    tab.open("requests")
    tab.page.fill(f"{form} input[name=since]", since.strftime("%Y-%m-%dT%H:%M"))
    tab.page.fill(f"{form} input[name=until]", until.strftime("%Y-%m-%dT%H:%M"))
    tab.navigate(lambda: tab.page.click(f"{form} button[type=submit]"), "requests")
    window = (
        select(t.c.request_id)
        .where(t.c.timestamp >= int(since.timestamp() * 1000), t.c.timestamp < int(until.timestamp() * 1000))
        .order_by(t.c.timestamp.desc(), t.c.id.desc())
        .limit(50)
    )
    ids = [tr.get_attribute("data-key") for tr in tab.rows("requests")]
    assert ids and ids == [r["request_id"] for r in ledger(site, window)]

    # One real request, sent through the SDK, opened from the log.
    rid = site.real_ids["console-a"][-1]
    tab.open("requests?project=console-a", "requests")
    assert rid in [tr.get_attribute("data-key") for tr in tab.rows("requests")]
    tab.page.click(f"table[data-table=requests] tr[data-key='{rid}']")
    tab.page.wait_for_selector(f"[data-record='{rid}']")
    record = site.gw.record(rid)
    fields = tab.page.locator("[data-record] .kv").all()
    seen = set()
    for kv in fields:
        name = kv.get_attribute("data-field")
        if name not in record:
            continue  # a figure the page derives (ours minus the upstream's)
        seen.add(name)
        value = kv.locator("dd").get_attribute("data-value")
        want = record[name]
        if want is None:
            assert value is None, name
        elif isinstance(want, bool):
            assert value == str(want).lower(), name
        else:
            assert value == str(want), name
    contract = {"request_id", "key_id", "user", "project", "department", "client_ip", "timestamp", "duration_ms"}
    contract |= {"ttft_ms", "model", "engine", "status", "prompt_tokens", "completion_tokens", "total_tokens"}
    contract |= {"usage_source", "upstream_prompt_tokens", "cost_micros", "price_version", "currency"}
    assert contract <= seen
    assert record["project"] == "console-a" and record["status"] == "ok" and record["cost_micros"] is not None
    # Times read in the operator's zone, not the browser's.
    local = datetime.fromtimestamp(record["timestamp"] / 1000, ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")
    assert tab.page.inner_text("[data-field=timestamp] dd").startswith(local)


# Quotas -----------------------------------------------------------------------------------------
def test_admin_approves_a_smaller_amount_and_denies_with_a_reason(site, tabs):
    made = admin(
        site, "POST", "/quotas", json={"scope": "project", "name": "console-b", "tokens": 1000, "period": "month"}
    )
    assert made.status_code == 201, made.text
    member = site.members["console-b"]  # a member asks for its own project, as the CLI or a script would
    asks = []
    for tokens, why in ((5000, "load test next week"), (9000, "a second batch")):
        r = admin(
            site,
            "POST",
            "/quota-requests",
            member,
            json={"scope": "project", "name": "console-b", "tokens": tokens, "reason": why},
        )
        assert r.status_code == 201, r.text
        asks.append(r.json()["request_id"])
    first, second = asks

    tab = tabs().sign_in(site.gw.admin_key)
    tab.open("quotas")
    row = tab.page.locator(f"table[data-table=quota-pending] tr[data-key={first}]")
    assert cell_value(row, "amount") is None  # a rendered cell: its figure is on the span
    assert row.locator("[data-col=amount] [data-value]").get_attribute("data-value") == "5000"
    row.locator("input[name=amount]").fill("2000")
    row.locator("button[data-action=approve]").click()
    tab.page.wait_for_selector(f".flash:has-text('{first}')")
    tab.settle("quotas")

    # Denying needs a reason: the server's refusal shows in the banner, and nothing changes.
    row = tab.page.locator(f"table[data-table=quota-pending] tr[data-key={second}]")
    row.locator("button[data-action=deny]").click()
    assert "reason" in tab.banner()
    row.locator("input[name=reason]").fill("budget frozen until January")
    row.locator("button[data-action=deny]").click()
    tab.page.wait_for_selector(f".flash:has-text('{second}')")
    tab.settle("quotas")
    assert tab.page.locator(f"table[data-table=quota-pending] tr[data-key={first}]").count() == 0
    assert tab.page.locator(f"table[data-table=quota-decided] tr[data-key={second}]").count() == 1

    approved = {r["request_id"]: r for r in admin(site, "GET", "/quota-requests", params={"status": "approved"}).json()}
    denied = {r["request_id"]: r for r in admin(site, "GET", "/quota-requests", params={"status": "denied"}).json()}
    assert approved[first]["granted"] == 2000 and approved[first]["decided_by"].startswith("admin:")
    assert denied[second]["decision_reason"] == "budget frozen until January" and denied[second]["granted"] is None
    status = admin(site, "GET", "/quotas/status", params={"scope": "project", "name": "console-b"}).json()
    assert status[0]["granted"] == 2000 and status[0]["effective_limit"] == 3000
    # The page shows the same, from the same route.
    limit_row = tab.page.locator(f"table[data-table=quota-status] tr[data-key={status[0]['quota_id']}]")
    assert limit_row.locator("[data-col=effective_limit] [data-value]").first.get_attribute("data-value") == "3000"


# Exports ----------------------------------------------------------------------------------------
def test_csv_export_from_the_page_is_the_clis_byte_for_byte(site, tabs, tmp_path):
    tab = tabs().sign_in(site.gw.admin_key)
    tab.open("board")
    with tab.page.expect_download() as dl:
        tab.page.click("[data-section=top-department] a.export[data-format=csv]")
    got = Path(dl.value.path()).read_bytes()
    assert dl.value.suggested_filename == "top.csv"
    cli = tmp_path / "cli.csv"
    site.gw.cli("report", "top", "--by", "department", "--week", "--format", "csv", "--output", str(cli))
    assert got == cli.read_bytes()
    # The workbook link downloads a real workbook with the same rows.
    with tab.page.expect_download() as dl:
        tab.page.click("[data-section=top-department] a.export[data-format=xlsx]")
    assert dl.value.suggested_filename == "top.xlsx"
    sheet = load_workbook(io.BytesIO(Path(dl.value.path()).read_bytes())).active
    names = {row[3] for row in sheet.iter_rows(values_only=True)}
    assert {r["department"] for r in csv.DictReader(io.StringIO(got.decode())) if r["row"] == "group"} <= names


# Languages --------------------------------------------------------------------------------------
def test_language_switches_and_is_remembered(site, tabs):
    tab = tabs().sign_in(site.gw.admin_key, lang=None)  # an English browser: English
    p = tab.page
    tab.open("board")
    expect(p.locator("nav.tabs a[data-page=board]")).to_have_text("Board")
    expect(p.locator("[data-section=top-department] h2")).to_have_text("Departments")
    tab.navigate(lambda: p.click("#lang"), "board")
    expect(p.locator("nav.tabs a[data-page=board]")).to_have_text("看板")
    expect(p.locator("[data-section=top-department] h2")).to_have_text("部门排行")
    expect(p.locator(".signout button")).to_have_text("退出登录")
    expect(p.locator("html")).to_have_attribute("lang", "zh-CN")
    tab.navigate(p.reload, "board")
    expect(p.locator("nav.tabs a[data-page=quotas]")).to_have_text("配额")  # remembered
    tab.navigate(lambda: p.click("#lang"), "board")
    expect(p.locator("nav.tabs a[data-page=quotas]")).to_have_text("Quotas")
    # A Chinese browser with no choice made reads Chinese, the sign-in page included.
    zh = tabs(locale="zh-CN")
    zh.page.goto(f"{site.base}/console/login")
    expect(zh.page.locator("h1")).to_have_text("登录控制台")
    zh.sign_in(site.gw.admin_key, lang=None)
    expect(zh.page.locator("nav.tabs a[data-page=overview]")).to_have_text("概览")


# A viewer of one project ------------------------------------------------------------------------
def test_a_project_viewer_sees_nothing_of_another_project(site, tabs):
    ann_ask = admin(
        site,
        "POST",
        "/quota-requests",
        site.members["console-a"],
        json={"scope": "project", "name": "console-a", "tokens": 100, "reason": "a viewer may read this"},
    )
    assert ann_ask.status_code == 201, ann_ask.text
    tab = tabs().sign_in(site.viewer_key)
    p = tab.page
    assert p.get_attribute("#who .role", "data-role") == "viewer"
    assert p.get_attribute("#who .who-scope", "data-scope") == "project:console-a"

    # Rankings: only its project, its department as seen through its project, its users.
    tab.open("board")
    assert [tr.get_attribute("data-key") for tr in tab.rows("top-project")] == ["console-a"]
    assert [tr.get_attribute("data-key") for tr in tab.rows("top-department")] == ["qa"]
    assert [tr.get_attribute("data-key") for tr in tab.rows("top-user")] == ["ann"]
    a_tokens = sum(r["total_tokens"] for r in ledger(site, select(t.c.total_tokens).where(t.c.project == "console-a")))
    assert cell_value(tab.rows("top-project")[0], "total_tokens") == a_tokens
    assert all("console-a" in tr.inner_text() for tr in tab.rows("alerts"))  # the demo's alerts are elsewhere

    # The request log: its records only; asking for another project is refused, visibly.
    tab.open("requests")
    ids = [tr.get_attribute("data-key") for tr in tab.rows("requests")]
    assert sorted(ids) == sorted(site.real_ids["console-a"])
    tab.open("requests?project=console-b", "requests")
    assert "console-a" in tab.banner()
    assert tab.rows("requests") == []
    # Another project's request by its id: not shown, and not even said to exist.
    other = site.real_ids["console-b"][0]
    tab.open(f"requests/{other}", "requests")
    assert "no record" in tab.banner()
    assert p.locator("[data-record]").count() == 0

    # Exports with the viewer's session: the page's links and the routes behind them.
    tab.open("requests")
    with p.expect_download() as dl:
        p.click("a.export[data-format=csv]")
    exported = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text(encoding="utf-8"))))
    assert sorted(r["request_id"] for r in exported) == sorted(site.real_ids["console-a"])
    for path in ("/admin/reports/top?by=project&format=csv", "/admin/reports/top?by=user&period=month&format=csv"):
        text = p.request.get(f"{site.base}{path}").text()
        assert "console-b" not in text and "bob" not in text
    assert p.request.get(f"{site.base}/admin/usage/{other}").status == 404
    assert p.request.get(f"{site.base}/admin/usage?project=console-b&format=csv").status == 403
    assert p.request.get(f"{site.base}/admin/quotas/status?format=csv").ok

    # Quotas: its project's request is listed, with no way to decide it.
    tab.open("quotas")
    pending = [tr.get_attribute("data-key") for tr in tab.rows("quota-pending")]
    assert pending == [ann_ask.json()["request_id"]]
    assert p.locator("[data-action=approve], [data-action=deny]").count() == 0


# Signing in and out -----------------------------------------------------------------------------
def test_wrong_key_sign_out_expired_session_and_csrf(site, tabs):
    tab = tabs()
    p = tab.page
    p.goto(f"{site.base}/console/login")
    p.evaluate("() => localStorage.setItem('tokenabacus.lang', 'en')")
    p.fill("input[name=key]", "sk-not-a-key")
    p.click("button[type=submit]")
    expect(p.locator("#login-error")).to_contain_text("not valid")
    p.fill("input[name=key]", site.members["console-a"])
    p.click("button[type=submit]")
    expect(p.locator("#login-error")).to_contain_text("admin and viewer")

    tab.sign_in(site.gw.admin_key)
    session = next(c["value"] for c in tab.context.cookies() if c["name"] == "tokenabacus_session")
    csrf = p.get_attribute("meta[name=csrf-token]", "content")
    jar = {"tokenabacus_session": session}
    # CSRF: the cookie alone (a forged cross-site request) cannot write; the page's header can.
    bare = httpx.post(f"{site.base}/admin/quota-requests/qr_none/deny", json={"reason": "x"}, cookies=jar)
    assert bare.status_code == 403 and bare.json()["error"]["code"] == "csrf"
    wrong = httpx.post(
        f"{site.base}/admin/quota-requests/qr_none/deny",
        json={"reason": "x"},
        cookies=jar,
        headers={"X-CSRF-Token": "x"},
    )
    assert wrong.status_code == 403
    ok = httpx.post(
        f"{site.base}/admin/quota-requests/qr_none/deny",
        json={"reason": "x"},
        cookies=jar,
        headers={"X-CSRF-Token": csrf},
    )
    assert ok.status_code == 404  # past the CSRF check: there is no such request
    assert httpx.post(f"{site.base}/console/logout", data={}, cookies=jar).status_code == 403

    # Sign-out from the header ends the session: the old cookie no longer reads /admin/me.
    assert httpx.get(f"{site.base}/admin/me", cookies=jar).status_code == 200
    p.click(".signout button")
    p.wait_for_url("**/console/login?e=signed_out")
    expect(p.locator("#login-error")).to_contain_text("signed out")
    assert httpx.get(f"{site.base}/admin/me", cookies=jar).status_code == 401
    p.goto(f"{site.base}/console/")
    p.wait_for_url("**/console/login**")

    # A session ended elsewhere: the next call the page makes takes it back to the sign-in page.
    tab.sign_in(site.gw.admin_key)
    session = next(c["value"] for c in tab.context.cookies() if c["name"] == "tokenabacus_session")
    csrf = p.get_attribute("meta[name=csrf-token]", "content")
    out = httpx.post(f"{site.base}/console/logout", data={"csrf": csrf}, cookies={"tokenabacus_session": session})
    assert out.status_code == 303
    p.click("nav.tabs a[data-page=board]")
    p.wait_for_url("**/console/login?e=expired")
    expect(p.locator("#login-error")).to_contain_text("ended")


# Finance: a past month's chargeback, the board's months, the log by department -----------------
def last_month() -> str:
    return windows.window(ZONE, "month", previous=True).label


def cli_json(site: Site, *args: str):
    return json.loads(site.gw.cli(*args, "--format", "json").stdout)


def dept_sums(site: Site, since_ms: int, until_ms: int) -> dict[str, tuple[int, int]]:
    """Tokens and CNY cost per department over a window, summed by the ledger itself."""
    rows = ledger(
        site,
        select(
            t.c.department,
            t.c.currency,
            func.sum(t.c.total_tokens).label("tokens"),
            func.sum(t.c.cost_micros).label("cost"),
        )
        .where(t.c.timestamp >= since_ms, t.c.timestamp < until_ms)
        .group_by(t.c.department, t.c.currency),
    )
    tokens: dict[str, int] = defaultdict(int)
    cost: dict[str, int] = defaultdict(int)
    for r in rows:
        tokens[r["department"] or ""] += int(r["tokens"] or 0)
        if r["currency"] == "CNY":
            cost[r["department"] or ""] += int(r["cost"])
    return {d: (tokens[d], cost.get(d, 0)) for d in tokens}


def test_finance_page_is_the_clis_chargeback_of_a_past_month(site, tabs):
    month = last_month()
    win = windows.window(ZONE, month=month)
    cli = cli_json(site, "report", "chargeback", "--month", month)
    want = {r["department"]: r for r in cli["summary"] if r["row"] == "group" and r["currency"] == "CNY"}
    assert len(want) >= 3  # the demo's departments spent last month

    tab = tabs().sign_in(site.gw.admin_key)
    tab.navigate(lambda: tab.page.click("nav.tabs a[data-page=finance]"), "finance")  # opens on last month
    assert tab.page.input_value("select[name=month]") == month
    shown = {tr.get_attribute("data-key"): tr for tr in tab.rows("finance-summary")}
    sums = dept_sums(site, win.since_ms, win.until_ms)
    for dept, r in want.items():
        row = shown[f"{dept}|CNY"]
        assert cell_value(row, "cost_micros") == r["cost_micros"] == sums[dept][1], dept
        assert cell_value(row, "amount_due_micros") == r["amount_due_micros"], dept
        assert cell_value(row, "total_tokens") == r["total_tokens"], dept
        assert re.fullmatch(r"¥[\d,]+\.\d\d", row.locator("[data-col=cost_micros]").inner_text())
    foot = tab.page.locator("table[data-table=finance-summary] tfoot tr[data-key$='|CNY']")
    total = next(r for r in cli["totals"] if r["currency"] == "CNY")
    assert cell_value(foot, "cost_micros") == total["cost_micros"] == sum(c for _, c in sums.values())
    # Each department's detail opens, and its total is the summary's.
    dept = max(want, key=lambda d: want[d]["cost_micros"])
    tab.page.click(f"details[data-department='{dept}'] summary")
    detail_total = tab.page.locator(f"details[data-department='{dept}'] tfoot tr[data-key$='|CNY']")
    assert cell_value(detail_total, "cost_micros") == want[dept]["cost_micros"]
    versions = {tr.get_attribute("data-key") for tr in tab.rows("finance-versions")}
    assert versions == {v["price_version"] for v in cli["price_versions"]}

    # The workbook link: the month, in the page's language.
    href = tab.page.get_attribute("a.export[data-format=xlsx]", "href")
    assert f"month={month}" in href and "format=xlsx" in href and "lang=en" in href
    with tab.page.expect_download() as dl:
        tab.page.click("a.export[data-format=xlsx]")
    assert dl.value.suggested_filename == f"chargeback-{month}.xlsx"
    assert load_workbook(io.BytesIO(Path(dl.value.path()).read_bytes())).sheetnames

    # A correction and a GPU pool dated into that month show in it, in the department's amount due.
    site.gw.cli(
        "costs", "adjust", "--department", dept, "--amount", "-12.5", "--reason", "outage credit", "--at", f"{month}-15"
    )
    site.gw.cli("hardware", "set", "pool-console", "--models", EMBEDDED, "--monthly", "3000", "--from", month)
    api = admin(site, "GET", "/reports/chargeback", params={"month": month}).json()
    tab.navigate(tab.page.reload, "finance")
    adj = tab.rows("finance-adjustments")
    assert [cell_value(tr, "amount_micros") for tr in adj] == [-12_500_000]
    assert "outage credit" in adj[0].inner_text()
    row = tab.page.locator(f"table[data-table=finance-summary] tbody tr[data-key='{dept}|CNY']")
    assert cell_value(row, "adjustments_micros") == -12_500_000
    got = next(r for r in api["summary"] if r["department"] == dept and r["currency"] == "CNY")
    assert cell_value(row, "amount_due_micros") == got["amount_due_micros"]
    hw = [(r["department"], r["cost_micros"]) for r in api["hardware"]]
    assert len(tab.rows("finance-hardware")) == len(hw) > 0
    by_dept: dict[str, int] = defaultdict(int)
    for d, c in hw:
        by_dept[d or ""] += c
    for d, c in by_dept.items():
        r = tab.page.locator(f"table[data-table=finance-summary] tbody tr[data-key='{d}|CNY']")
        if r.count():
            assert cell_value(r, "hardware_micros") == c, d

    # The department's name opens its request log for that month.
    tab.navigate(lambda: tab.page.click(f"table[data-table=finance-summary] a[data-log='{dept}']"), "requests")
    assert f"department={dept}" in tab.page.url
    q = (
        select(t.c.request_id)
        .where(t.c.department == dept, t.c.timestamp >= win.since_ms, t.c.timestamp < win.until_ms)
        .order_by(t.c.timestamp.desc(), t.c.id.desc())
        .limit(50)
    )
    assert [tr.get_attribute("data-key") for tr in tab.rows("requests")] == [r["request_id"] for r in ledger(site, q)]
    assert tab.page.input_value("form[data-form=filters] input[name=department]") == dept


def test_board_shows_last_month_and_a_chosen_range(site, tabs):
    tab = tabs().sign_in(site.gw.admin_key)
    tab.open("board")
    tab.navigate(lambda: tab.page.click("[data-name=period] button[data-value=last_month]"), "board")

    def shown() -> dict[str, int | None]:
        return {tr.get_attribute("data-key"): cell_value(tr, "total_tokens") for tr in tab.rows("top-department")}

    cli = cli_json(site, "report", "top", "--by", "department", "--month", "--previous")
    assert shown() == {(r["department"] or ""): r["total_tokens"] for r in cli if r["row"] == "group"}
    win = windows.window(ZONE, "month", previous=True)
    assert shown() == {d: v[0] for d, v in dept_sums(site, win.since_ms, win.until_ms).items()}

    # A range of days, the last one included.
    first = f"{last_month()}-10"
    to = f"{last_month()}-20"
    tab.navigate(lambda: tab.page.click("[data-name=period] button[data-value=range]"), "board")
    form = "form[data-form=range]"
    tab.page.fill(f"{form} input[name=since]", first)
    tab.page.fill(f"{form} input[name=to]", to)
    tab.navigate(lambda: tab.page.click(f"{form} button[type=submit]"), "board")
    assert f"since={first}" in tab.page.url and f"to={to}" in tab.page.url
    until = (datetime.fromisoformat(to) + timedelta(days=1)).date().isoformat()
    cli = cli_json(site, "report", "top", "--by", "department", "--since", first, "--until", until)
    assert shown() == {(r["department"] or ""): r["total_tokens"] for r in cli if r["row"] == "group"}
    a = windows.window(ZONE, since=first, until=until)
    assert shown() == {d: v[0] for d, v in dept_sums(site, a.since_ms, a.until_ms).items()}
    href = tab.page.get_attribute("[data-section=top-department] a.export[data-format=csv]", "href")
    assert f"since={first}" in href and f"until={until}" in href
    # A range typed wrong is said, not sent.
    tab.page.fill(f"{form} input[name=since]", "2026/11/10")
    tab.page.click(f"{form} button[type=submit]")
    assert "yyyy-mm-dd" in tab.banner()


# Operators: keys and limits --------------------------------------------------------------------
def test_admin_creates_and_revokes_a_key_and_sets_a_limit(site, tabs):
    tab = tabs().sign_in(site.gw.admin_key)
    p = tab.page
    tab.navigate(lambda: p.click("nav.tabs a[data-page=keys]"), "keys")
    form = "form[data-form=new-key]"
    p.select_option(f"{form} select[name=role]", "member")
    p.fill(f"{form} input[name=user]", "kim")
    p.fill(f"{form} input[name=department]", "qa")
    p.fill(f"{form} input[name=project]", "console-a")
    p.fill(f"{form} input[name=name]", "made in the console")
    p.click(f"{form} button[type=submit]")
    p.wait_for_selector("[data-created]")
    tab.settle("keys")
    box = p.locator("[data-created]")
    key_id = box.get_attribute("data-created")
    secret = p.input_value("input[data-secret]")
    assert secret.startswith("sk-") and key_id.startswith("key_")
    p.click("button[data-action=copy]")
    expect(box.locator("[role=status]")).to_have_text("Copied.")
    # The key works on /v1 and is the CLI's key like any other.
    raw = site.gw.client(secret).chat.completions.with_raw_response.create(
        model=EMBEDDED, messages=SAY, max_tokens=2, temperature=0
    )
    record = site.gw.record(raw.headers["x-request-id"])
    assert (record["key_id"], record["user"], record["project"], record["department"]) == (
        key_id,
        "kim",
        "console-a",
        "qa",
    )
    listed = {k["key_id"]: k for k in cli_json(site, "keys", "list")}
    assert listed[key_id]["name"] == "made in the console" and listed[key_id]["role"] == "member"
    # The secret is shown once: not after the page is opened again.
    tab.navigate(p.reload, "keys")
    assert p.locator("input[data-secret]").count() == 0 and secret not in p.content()
    # Revoke: two clicks, no dialog; then /v1 refuses the key.
    row = p.locator(f"table[data-table=keys] tr[data-key={key_id}]")
    row.locator("button[data-action=revoke]").click()
    row.locator("button[data-action=confirm]").click()
    p.wait_for_selector(f".flash:has-text('{key_id}')")
    tab.settle("keys")
    assert p.locator(f"table[data-table=keys] tr[data-key={key_id}]").count() == 0
    me = admin(site, "GET", "/me").json()["key_id"]
    assert p.locator(f"table[data-table=keys] tr[data-key={me}] [data-action]").count() == 0  # not its own
    deadline = datetime.now() + timedelta(seconds=15)
    status = 200
    while datetime.now() < deadline:
        status = httpx.get(f"{site.gw.base_url}/models", headers={"Authorization": f"Bearer {secret}"}).status_code
        if status == 401:
            break
        time.sleep(0.2)
    assert status == 401
    assert {k["key_id"]: k for k in cli_json(site, "keys", "list", "--all")}[key_id]["revoked_at"]

    # A limit set from the quotas page, recorded like the CLI's, then deleted.
    tab.navigate(lambda: p.click("nav.tabs a[data-page=quotas]"), "quotas")
    form = "form[data-form=set-limit]"
    p.select_option(f"{form} select[name=scope]", "project")
    p.fill(f"{form} input[name=name]", "console-a")
    p.select_option(f"{form} select[name=metric]", "requests")
    p.fill(f"{form} input[name=amount]", "7,777")
    p.select_option(f"{form} select[name=period]", "week")
    p.click(f"{form} button[type=submit]")
    p.wait_for_selector(".flash")
    tab.settle("quotas")
    made = [q for q in admin(site, "GET", "/quotas").json() if q["name"] == "console-a" and q["period"] == "week"]
    assert [(q["metric"], q["limit"]) for q in made] == [("requests", 7777)]
    qid = made[0]["quota_id"]
    expect(p.locator(".flash")).to_contain_text(qid)
    events = admin(site, "GET", "/events").json()
    assert any(e["target_id"] == qid and e["action"] == "quota.create" for e in events), events[:3]
    row = p.locator(f"table[data-table=quota-status] tr[data-key={qid}]")
    row.locator("button[data-action=delete]").click()
    row.locator("button[data-action=confirm]").click()
    p.wait_for_selector(f".flash:has-text('{qid}')")
    tab.settle("quotas")
    assert qid not in {q["quota_id"] for q in admin(site, "GET", "/quotas").json()}
    # A refusal from the server shows in the banner, in the page's language.
    p.select_option(f"{form} select[name=scope]", "global")
    p.select_option(f"{form} select[name=metric]", "cost")
    p.fill(f"{form} input[name=amount]", "abc")
    p.click(f"{form} button[type=submit]")
    assert tab.banner()


# The Chinese console ---------------------------------------------------------------------------
ISO_T = re.compile(r"\d{4}-\d\d-\d\dT\d\d")
CJK = re.compile(r"[\u4e00-\u9fff]")
STRING = re.compile(r'\bt\("([\w.%/-]+)"')


def test_the_chinese_console_speaks_chinese(site, tabs):
    alerts = admin(site, "GET", "/alerts").json()
    assert alerts  # the demo's
    zh = tabs(locale="zh-CN").sign_in(site.gw.admin_key, lang="zh")
    p = zh.page
    zh.open("board")
    cells = [c.inner_text() for c in p.locator("table[data-table=alerts] [data-col=message]").all()]
    assert len(cells) == len(alerts) and all(CJK.search(c) for c in cells)
    english = re.compile(r"\b(threshold|used|failed|busiest|usual|period|apart|ready)\b", re.I)
    assert not any(english.search(c) for c in cells), cells
    assert not any(ISO_T.search(c) for c in cells)
    assert [c.inner_text() for c in p.locator("table[data-table=alerts] [data-col=rule]").all()][0] in (
        "用量突增",
        "高频调用",
        "计量偏差",
        "错误率过高",
        "配额告警",
        "上游不可用",
    )
    # The severity never wraps; times are yyyy-mm-dd hh:mm:ss.
    sev = p.locator("table[data-table=alerts] td[data-col=severity]").first
    assert sev.evaluate("td => getComputedStyle(td).whiteSpace") == "nowrap"
    for td in p.locator("table[data-table=alerts] td[data-col=fired_at]").all():
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", td.inner_text())
    # Money: two decimals in every cost cell, four in the unit prices.
    for td in p.locator("table[data-table=top-department] td[data-col=cost_micros]").all():
        assert re.fullmatch(r"-?¥[\d,]+\.\d\d", td.inner_text()), td.inner_text()
    for td in p.locator("table[data-table=models] td[data-col=cost_per_1k_micros]").all():
        assert re.fullmatch(r"—|-?¥[\d,]+\.\d{4}", td.inner_text()), td.inner_text()
    # No ISO time with a 'T' on any page.
    assert not ISO_T.search(p.inner_text("#main"))
    for route in (f"finance?month={last_month()}", "requests", "quotas", "keys"):
        zh.open(route)
        assert not ISO_T.search(p.inner_text("#main")), route
    # A refusal the page knows is said in Chinese; an unknown one after a Chinese lead-in.
    zh.open("requests?since=2026-13-01", "requests")
    assert zh.banner().startswith("服务器拒绝了请求：")
    viewer = tabs(locale="zh-CN").sign_in(site.viewer_key, lang="zh")
    viewer.open("requests?project=console-b", "requests")
    assert viewer.banner() == "此密钥只能查看项目 console-a 的数据。"

    # Every string the pages name exists in both languages (a missing one shows as its key).
    dicts = p.evaluate("async () => { const m = await import('/console/static/i18n.js'); return m.DICT; }")
    assert set(dicts["en"]) <= set(dicts["zh"]), set(dicts["en"]) - set(dicts["zh"])
    static = Path(__file__).parents[1] / "src/tokenabacus/console/static"
    used = {k for f in static.rglob("*.js") if "vendor" not in f.parts for k in STRING.findall(f.read_text())}
    assert used and not used - set(dicts["zh"]), used - set(dicts["zh"])
    filters = re.search(r"const FILTERS = \[(.*?)\]", (static / "pages/requests.js").read_text()).group(1)
    assert {f"filter.{f}" for f in re.findall(r'"(\w+)"', filters)} <= set(dicts["zh"])

    # The English page says the same alerts in English: no Chinese in the messages.
    en = tabs().sign_in(site.gw.admin_key)
    en.open("board")
    cells = [c.inner_text() for c in en.page.locator("table[data-table=alerts] [data-col=message]").all()]
    assert len(cells) == len(alerts) and not any(CJK.search(c) for c in cells), cells


def test_a_viewer_reads_its_finance_and_cannot_manage_keys(site, tabs):
    tab = tabs().sign_in(site.viewer_key)
    p = tab.page
    assert p.locator("nav.tabs a[data-page=keys]").count() == 0
    month = windows.window(ZONE, "month").label  # the SDK's requests are this month's
    tab.open(f"finance?month={month}", "finance")
    assert p.locator("#banner").is_hidden()
    keys = [tr.get_attribute("data-key") for tr in tab.rows("finance-summary")]
    assert keys and all(k.startswith("qa|") for k in keys)
    own = ledger(
        site, select(func.sum(t.c.cost_micros).label("c")).where(t.c.project == "console-a", t.c.currency == "CNY")
    )
    assert cell_value(tab.rows("finance-summary")[0], "cost_micros") == int(own[0]["c"])
    assert "console-b" not in p.inner_text("#main") and "bob" not in p.inner_text("#main")
    href = p.get_attribute("a.export[data-format=xlsx]", "href")
    assert p.request.get(f"{site.base}{href}").ok
    tab.open("keys")
    assert p.locator("[data-admin-only]").count() == 1 and p.locator("form[data-form=new-key]").count() == 0
    tab.open("quotas")
    assert p.locator("form[data-form=set-limit], [data-action=delete]").count() == 0

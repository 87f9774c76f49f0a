"""The console's server side, over real HTTP against a real gateway: sign-in, sessions (stored
hashed, ended by sign-out, expiry and key revocation), CSRF on every write, and the /admin reads
the pages use (overview, request log and one request, alerts, exports), each equal to the
records and scoped for a viewer. The pages themselves are driven in a browser by
test_console_browser.py."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from conftest import GatewayProc
from procs import wait_for
from tokenabacus.calendar import now_ms
from tokenabacus.ledger.record import new_request_id, start_record
from tokenabacus.ledger.schema import console_sessions

ZONE = "Asia/Shanghai"
TZ = ZoneInfo(ZONE)
TEAMS = [("marketing", "campaign"), ("marketing", "brand"), ("rnd", "search")]


def records_around_now(rng: random.Random, n: int) -> list[dict]:
    """Records over the last 40 days up to a minute ago, priced in CNY, some failed."""
    now = now_ms() - 60_000
    out = []
    for i in range(n):
        dept, project = rng.choice(TEAMS)
        rec = start_record(model=rng.choice(["qwen-7b", "smol"]), endpoint="/v1/chat/completions")
        rec.request_id = new_request_id()
        # Every tenth record in the last two days, so today and yesterday have some.
        span = 2 * 86_400_000 if i % 10 == 0 else 40 * 86_400_000
        rec.timestamp = now - rng.randrange(span)
        rec.department, rec.project, rec.user = dept, project, rng.choice(["ann", "ben"])
        rec.key_id = f"key_{rec.user}"
        rec.client_ip = rng.choice(["10.0.0.1", "10.0.0.2"])
        rec.status = rng.choice(["ok"] * 8 + ["error", "cancelled"])
        rec.prompt_tokens = rng.randint(1, 2000)
        rec.completion_tokens = rng.randint(0, 500)
        rec.total_tokens = rec.prompt_tokens + rec.completion_tokens
        rec.duration_ms = rng.randint(20, 9000)
        rec.usage_source = "tokenizer"
        if rec.model == "qwen-7b":
            rec.price_version, rec.currency = "pv_test", "CNY"
            rec.cost_micros = rec.prompt_tokens * 800 + rec.completion_tokens * 2400
        out.append(rec.to_dict())
    return out


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    gw = GatewayProc(tmp / "data", {"governance": {"timezone": ZONE}}).start()
    store = gw.store()
    records = records_around_now(random.Random(11), 2000)
    # The organization the records name: keys and limits are held to it once it exists.
    for dept in sorted({d for d, _ in TEAMS}):
        gw.cli("org", "department", "add", dept)
    for dept, project in TEAMS:
        gw.cli("org", "project", "add", project, "--department", dept)
    try:
        store.usage.insert(records)
        for scope in ("department=marketing", "project=search", "model=qwen-7b"):
            store.alerts.claim(
                {
                    "rule": "spike",
                    "kind": "spike",
                    "scope": scope,
                    "period": "2026-12-01",
                    "fired_at": now_ms(),
                    "severity": "warning",
                    "figure": 10.0,
                    "baseline": 1.0,
                    "threshold": 3.0,
                    "message": f"spike on {scope}",
                },
                [],
            )
    finally:
        store.close()
    viewer = json.loads(gw.cli("keys", "create", "--role", "viewer", "--project", "search", "--json").stdout)["key"]
    try:
        yield gw, records, viewer
    finally:
        gw.stop()


def root(gw: GatewayProc) -> str:
    return gw.base_url.removesuffix("/v1")


def form_token(page: httpx.Response) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def sign_in(gw: GatewayProc, key: str) -> tuple[httpx.Client, str]:
    """A browser-like client signed in with ``key``, and the page's CSRF token."""
    c = httpx.Client(base_url=root(gw), timeout=60)
    page = c.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = c.post("/console/login", data={"key": key, "csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/console/", r.text
    shell = c.get("/console/")
    assert shell.status_code == 200
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', shell.text).group(1)
    return c, csrf


def test_sign_in_sessions_and_csrf(console):
    gw, _, _ = console
    c = httpx.Client(base_url=root(gw), timeout=60)
    r = c.get("/console/")
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    page = c.get("/console/login")
    assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    signin = page.headers["set-cookie"].lower()
    assert "httponly" in signin and "samesite=strict" in signin
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    # Another site's form carries no sign-in cookie of ours: refused before the key is looked at.
    bare = httpx.post(f"{root(gw)}/console/login", data={"key": gw.admin_key, "csrf": token})
    assert bare.status_code == 403 and "tokenabacus_session" not in bare.headers.get("set-cookie", "")
    # A failed sign-in shows the form again, with a fresh token.
    r = c.post("/console/login", data={"key": "sk-wrong", "csrf": token})
    assert r.status_code == 401 and 'name="csrf"' in r.text
    member = gw.create_key(user="m1", project="search", department="rnd")
    r = c.post("/console/login", data={"key": member, "csrf": form_token(r)})
    assert r.status_code == 403
    r = c.post("/console/login", data={"key": gw.admin_key, "csrf": form_token(r)})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "tokenabacus_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "max-age=28800" in cookie  # eight hours by default
    session_token = c.cookies["tokenabacus_session"]
    me = c.get("/admin/me").json()
    assert me["role"] == "admin"
    # The database holds a hash of the cookie's token, never the token.
    store = gw.store()
    try:
        with store.engine.connect() as conn:
            stored = [dict(r._mapping) for r in conn.execute(select(console_sessions))]
    finally:
        store.close()
    assert stored and all(session_token not in json.dumps(s) for s in stored)
    # A write with the cookie alone (what a forged cross-site request would be) is refused.
    w = c.post("/admin/org/departments", json={"name": "from-console"})
    assert w.status_code == 403 and w.json()["error"]["code"] == "csrf"
    shell = c.get("/console/")
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', shell.text).group(1)
    w = c.post("/admin/org/departments", json={"name": "from-console"}, headers={"x-csrf-token": csrf + "x"})
    assert w.status_code == 403
    w = c.post("/admin/org/departments", json={"name": "from-console"}, headers={"x-csrf-token": csrf})
    assert w.status_code == 201, w.text
    # Sign-out needs the token too, then the cookie is worth nothing.
    assert c.post("/console/logout", data={}).status_code == 403
    out = c.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"].startswith("/console/login")
    stale = httpx.get(f"{root(gw)}/admin/me", cookies={"tokenabacus_session": session_token})
    assert stale.status_code == 401
    # A viewer's session ends when its key is revoked.
    doomed = json.loads(gw.cli("keys", "create", "--role", "viewer", "--project", "brand", "--json").stdout)["key"]
    vc, _ = sign_in(gw, doomed)
    assert vc.get("/admin/me").json()["role"] == "viewer"
    key_id = vc.get("/admin/me").json()["key_id"]
    admin = {"Authorization": f"Bearer {gw.admin_key}"}
    assert httpx.delete(f"{root(gw)}/admin/keys/{key_id}", headers=admin).is_success
    wait_for(lambda: vc.get("/admin/me").status_code == 401, 10, "a revoked key's session to stop working")
    assert vc.get("/console/").headers["location"] == "/console/login?e=expired"


def test_sessions_expire(tmp_path):
    cfg = {"console": {"session_hours": 2 / 3600}}  # two seconds
    gw = GatewayProc(tmp_path / "data", cfg).start()
    try:
        c, _ = sign_in(gw, gw.admin_key)
        assert c.get("/admin/me").status_code == 200
        # The expiry is what this test is about: polled, but no later than the fixed 2.5 s it waited before.
        wait_for(lambda: c.get("/admin/me").status_code == 401, 2.5, "the two-second session to expire")
        assert c.get("/console/").status_code == 303
    finally:
        gw.stop()


def test_console_can_be_turned_off(tmp_path):
    gw = GatewayProc(tmp_path / "data", {"console": {"enabled": False}}).start()
    try:
        assert httpx.get(f"{root(gw)}/console/login").status_code == 404
        # and a session cookie is no way into /admin then
        assert httpx.get(f"{root(gw)}/admin/me", cookies={"tokenabacus_session": "x"}).status_code == 401
    finally:
        gw.stop()


def in_window(records: list[dict], a: int, b: int, **match) -> list[dict]:
    return [r for r in records if a <= r["timestamp"] < b and all(r[k] == v for k, v in match.items())]


def expected_figures(rows: list[dict]) -> dict:
    errors = sum(r["status"] == "error" for r in rows)
    costs = sum(r["cost_micros"] for r in rows if r["cost_micros"] is not None)
    return {
        "requests": len(rows),
        "total_tokens": sum(r["total_tokens"] for r in rows),
        "errors": errors,
        "error_rate": round(errors / len(rows), 6) if rows else None,
        "costs": [{"currency": "CNY", "cost_micros": costs}] if costs else [],
        "unpriced_requests": sum(r["cost_micros"] is None for r in rows),
    }


def test_overview_equals_the_records_for_admin_and_viewer(console):
    gw, records, viewer = console
    c, _ = sign_in(gw, gw.admin_key)
    vc, _ = sign_in(gw, viewer)
    for client, match in ((c, {}), (vc, {"project": "search"})):
        ov = client.get("/admin/reports/overview").json()
        assert ov["tz"] == ZONE
        for period in ("today", "month"):
            for part in ("current", "previous"):
                got = ov[period][part]
                want = expected_figures(in_window(records, got["since_ms"], got["until_ms"], **match))
                assert {k: got[k] for k in want} == want, (period, part)
            cur, prev = ov[period]["current"], ov[period]["previous"]
            assert prev["until_ms"] <= cur["since_ms"]
        today = ov["today"]
        local = datetime.fromtimestamp(today["current"]["since_ms"] / 1000, TZ)
        assert (local.hour, local.minute) == (0, 0)
        before = datetime.fromtimestamp(today["previous"]["since_ms"] / 1000, TZ)
        assert before == local - timedelta(days=1)
        span = today["current"]["until_ms"] - today["current"]["since_ms"]
        assert today["previous"]["until_ms"] - today["previous"]["since_ms"] == span
        month_start = datetime.fromtimestamp(ov["month"]["current"]["since_ms"] / 1000, TZ)
        assert (month_start.day, month_start.hour) == (1, 0)


def test_request_log_filters_pages_and_one_request(console):
    gw, records, viewer = console
    c, _ = sign_in(gw, gw.admin_key)
    newest = sorted(records, key=lambda r: -r["timestamp"])
    since = (datetime.now(TZ) - timedelta(days=10)).strftime("%Y-%m-%d")
    since_ms = int(datetime.fromisoformat(since).replace(tzinfo=TZ).timestamp() * 1000)
    want = [
        r
        for r in newest
        if r["timestamp"] >= since_ms and (r["project"], r["status"], r["client_ip"]) == ("brand", "ok", "10.0.0.2")
    ]
    params = {"since": since, "project": "brand", "status": "ok", "client_ip": "10.0.0.2", "limit": 20}
    page1 = c.get("/admin/usage", params=params).json()
    page2 = c.get("/admin/usage", params={**params, "offset": 20}).json()
    assert [r["request_id"] for r in page1 + page2] == [r["request_id"] for r in want[:40]]
    until = (datetime.now(TZ) - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M")
    until_ms = int(datetime.fromisoformat(until).replace(tzinfo=TZ).timestamp() * 1000)
    old = c.get("/admin/usage", params={"until": until, "limit": 5}).json()
    assert [r["request_id"] for r in old] == [r["request_id"] for r in newest if r["timestamp"] < until_ms][:5]
    one = c.get(f"/admin/usage/{want[0]['request_id']}").json()
    assert one == {k: want[0][k] for k in one} and one["cost_micros"] == want[0]["cost_micros"]
    assert c.get("/admin/usage/req_nope").status_code == 404
    # The CSV export is the same rows.
    text = c.get("/admin/usage", params={**params, "format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["request_id"] for r in rows] == [r["request_id"] for r in want[:20]]
    assert [int(r["total_tokens"]) for r in rows] == [r["total_tokens"] for r in want[:20]]
    xlsx = c.get("/admin/usage", params={**params, "format": "xlsx"})
    assert xlsx.headers["content-type"].startswith("application/vnd.openxmlformats")
    # A viewer of project `search` sees only its records, and another project's record not at all.
    vc, _ = sign_in(gw, viewer)
    mine = vc.get("/admin/usage", params={"limit": 10000}).json()
    assert {r["project"] for r in mine} == {"search"}
    assert len(mine) == sum(r["project"] == "search" for r in records)
    other = next(r for r in newest if r["project"] != "search")
    assert vc.get(f"/admin/usage/{other['request_id']}").status_code == 404
    assert vc.get("/admin/usage", params={"project": "brand"}).status_code == 403
    assert vc.get("/admin/usage", params={"project": "brand", "format": "csv"}).status_code == 403
    own = next(r for r in newest if r["project"] == "search")
    assert vc.get(f"/admin/usage/{own['request_id']}").json()["request_id"] == own["request_id"]


def test_alerts_heatmap_and_quota_exports(console):
    gw, records, viewer = console
    c, _ = sign_in(gw, gw.admin_key)
    alerts = c.get("/admin/alerts").json()
    assert {a["scope"] for a in alerts} >= {"department=marketing", "project=search", "model=qwen-7b"}
    vc, _ = sign_in(gw, viewer)
    assert [a["scope"] for a in vc.get("/admin/alerts").json()] == ["project=search"]
    text = vc.get("/admin/alerts", params={"format": "csv"}).text
    assert [r["scope"] for r in csv.DictReader(io.StringIO(text))] == ["project=search"]
    # The heatmap's grid: the month by day and hour, in the operator's zone.
    grid = c.get("/admin/report", params={"by": "day,hour", "period": "month", "tz": ZONE}).json()
    month_start = datetime.now(TZ).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    cells: dict[tuple[str, int], int] = {}
    for r in records:
        at = datetime.fromtimestamp(r["timestamp"] / 1000, TZ)
        if at >= month_start:
            key = (at.date().isoformat(), at.hour)
            cells[key] = cells.get(key, 0) + r["total_tokens"]
    assert {(g["day"], g["hour"]): g["total_tokens"] for g in grid} == cells
    as_csv = c.get("/admin/report", params={"by": "day,hour", "period": "month", "tz": ZONE, "format": "csv"}).text
    assert len(list(csv.DictReader(io.StringIO(as_csv)))) == len(grid)
    bad = c.get("/admin/report", params={"by": "day", "period": "month", "since": "2026-11-01"})
    assert bad.status_code == 400
    # Quota status exports what the CLI prints.
    gw.cli("quota", "set", "--project", "search", "--tokens", "1000000", "--period", "month")
    wait_for(lambda: c.get("/admin/quotas/status").json(), 10, "the new quota in /admin/quotas/status")
    api_csv = c.get("/admin/quotas/status", params={"format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(api_csv)))
    assert rows[0]["name"] == "search" and rows[0]["limit"] == "1000000"
    used = sum(
        r["total_tokens"]
        for r in records
        if r["project"] == "search"
        and datetime.fromtimestamp(r["timestamp"] / 1000, TZ) >= month_start
        and r["status"] != "rejected"
    )
    assert int(rows[0]["used"]) == used

"""Quotas and rate limits through the real gateway: the openai SDK against `tokenabacus serve`
with the embedded model, limits from the config file and from the CLI at run time, the ledger as
the judge. Under any concurrency the ledger's use never exceeds a limit."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest
from sqlalchemy import func, select

from conftest import EMBEDDED, GatewayProc
from procs import wait_for
from tokenabacus.calendar import period_bounds as bounds
from tokenabacus.ledger.schema import usage_records as t

SAY = [{"role": "user", "content": "Say hi"}]
# Greedy and never the end of text at once: every request generates exactly max_tokens ids.
STEADY = {"temperature": 0, "logit_bias": {"0": -100, "1": -100, "2": -100}}


def ask(client: openai.OpenAI, max_tokens: int = 4, **kw):
    return client.chat.completions.create(model=EMBEDDED, messages=SAY, max_tokens=max_tokens, **STEADY, **kw)


def ledger(gw: GatewayProc, **where) -> list[dict]:
    store = gw.store()
    try:
        q = select(t)
        for k, v in where.items():
            q = q.where(t.c[k] == v)
        with store.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q.order_by(t.c.id))]
    finally:
        store.close()


def settled(gw: GatewayProc, n: int, timeout: float = 15) -> list[dict]:
    """Wait until the ledger holds n records, then return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = ledger(gw)
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"ledger has {len(ledger(gw))} records, expected {n}")


def tokens_used(rows: list[dict]) -> int:
    return sum(r["total_tokens"] or 0 for r in rows)


def quota_status(gw: GatewayProc, scope: str, name: str) -> list[dict]:
    """The running gateway's view of a scope's limits (its counters: use and reservations)."""
    r = httpx.get(
        f"http://127.0.0.1:{gw.port}/admin/quotas/status",
        params={"scope": scope, "name": name},
        headers={"Authorization": f"Bearer {gw.admin_key}"},
    )
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def gw_factory(tmp_path):
    started: list[GatewayProc] = []

    def make(config: dict | None = None, name: str = "data") -> GatewayProc:
        gw = GatewayProc(tmp_path / name, config or {}).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def test_daily_token_quota_refuses_with_openai_429_and_a_rejected_record(gw_factory):
    gw = gw_factory({"governance": {"quotas": [{"user": "alice", "tokens": 700, "period": "day"}]}})
    client = gw.client(gw.create_key(user="alice"))
    first = ask(client)
    assert first.usage.total_tokens > 0
    refused = None
    for _ in range(20):
        try:
            ask(client)
        except openai.RateLimitError as e:
            refused = e
            break
    assert refused is not None, "the quota never refused"
    body = refused.response.json()["error"]
    assert body["type"] == "insufficient_quota"
    assert body["code"].startswith("quota_exceeded:cfg_")
    assert "user 'alice'" in body["message"] and "700 tokens per day" in body["message"]
    assert "resets at" in body["message"]
    h = refused.response.headers
    assert h["x-ratelimit-limit-tokens"] == "700"
    assert int(h["x-ratelimit-remaining-tokens"]) >= 0
    assert h["x-ratelimit-reset-tokens"]
    rejected = gw.record(refused.response.headers["x-request-id"])
    assert rejected["status"] == "rejected" and rejected["error_code"] == body["code"]
    assert rejected["total_tokens"] is None and rejected["user"] == "alice"
    assert tokens_used(ledger(gw)) <= 700
    # Another user is not limited by alice's quota.
    assert ask(gw.client(gw.create_key(user="bob"))).usage.total_tokens > 0


def test_concurrent_burst_never_overshoots_and_fitting_requests_pass_afterwards(gw_factory):
    limit = 900
    gw = gw_factory({"governance": {"quotas": [{"project": "burst", "tokens": limit, "period": "day"}]}})
    client = gw.client(gw.create_key(user="u1", project="burst"))

    def one(_):
        try:
            return ask(client, max_tokens=6).usage.total_tokens
        except openai.RateLimitError:
            return None

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, range(24)))
    ok = [r for r in results if r is not None]
    assert ok and len(ok) < 24
    rows = settled(gw, 24)
    assert len(rows) == 24
    assert tokens_used(rows) <= limit
    assert sum(1 for r in rows if r["status"] == "ok") == len(ok)
    assert tokens_used(rows) == sum(ok)
    # Nothing is still reserved: the remaining room serves the next request if the bound fits.
    status = json.loads(gw.cli("quota", "status", "--project", "burst", "--format", "json").stdout)
    assert status[0]["used"] == tokens_used(rows)


def test_use_survives_a_restart(gw_factory, tmp_path):
    cfg = {"governance": {"quotas": [{"user": "carol", "tokens": 800, "period": "month"}]}}
    gw = gw_factory(cfg)
    key = gw.create_key(user="carol")
    used = 0
    while True:
        try:
            used += ask(gw.client(key)).usage.total_tokens
        except openai.RateLimitError:
            break
    gw.stop()
    gw.start()
    with pytest.raises(openai.RateLimitError):
        ask(gw.client(key))
    assert tokens_used(ledger(gw)) == used <= 800


def test_runtime_limit_change_reaches_the_running_gateway(gw_factory):
    gw = gw_factory()
    key = gw.create_key(user="dave", project="p-dave")
    assert ask(gw.client(key)).usage.total_tokens > 0
    gw.cli("quota", "set", "--project", "p-dave", "--requests", "1", "--period", "day")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            ask(gw.client(key))
        except openai.RateLimitError as e:
            assert e.response.json()["error"]["type"] == "insufficient_quota"
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the new limit was not enforced within 5 s")
    listed = json.loads(gw.cli("quota", "list", "--format", "json").stdout)
    qid = next(q["quota_id"] for q in listed if q["name"] == "p-dave")
    gw.cli("quota", "delete", qid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            ask(gw.client(key))
            break
        except openai.RateLimitError:
            time.sleep(0.2)
    else:
        raise AssertionError("deleting the limit did not lift it within 5 s")


def test_rate_limit_per_minute_is_rate_limit_exceeded_with_retry_after(gw_factory):
    gw = gw_factory({"governance": {"rate_limits": [{"user": "erin", "rpm": 2}]}})
    client = gw.client(gw.create_key(user="erin"))
    # The limit counts per clock minute: three requests across a minute's end would all pass, so
    # they start early in a minute (a wait that is the scenario, not a guess at a condition).
    if (into := time.time() % 60) > 30:
        time.sleep(60.5 - into)
    ask(client)
    ask(client)
    with pytest.raises(openai.RateLimitError) as info:
        ask(client)
    err = info.value.response.json()["error"]
    assert err["type"] == "rate_limit_exceeded" and err["code"].startswith("rate_limit_exceeded:")
    assert "2 requests per minute" in err["message"]
    h = info.value.response.headers
    assert h["x-ratelimit-limit-requests"] == "2" and h["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(h["retry-after"]) <= 60


def test_approval_raises_the_limit_for_this_period(gw_factory):
    gw = gw_factory({"governance": {"quotas": [{"project": "campaign-2024", "requests": 1, "period": "month"}]}})
    client = gw.client(gw.create_key(user="fay", project="campaign-2024"))
    ask(client)
    with pytest.raises(openai.RateLimitError):
        ask(client)
    out = gw.cli("quota", "request", "--project", "campaign-2024", "--requests", "5", "--reason", "launch week")
    rid = out.stdout.split(":")[0]
    pending = json.loads(gw.cli("quota", "requests", "--format", "json").stdout)
    assert [r["request_id"] for r in pending] == [rid]
    gw.cli("quota", "approve", rid, "--requests", "2")
    deadline = time.monotonic() + 5
    while True:
        try:
            ask(client)
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the grant was not applied within 5 s"
            time.sleep(0.2)
    ask(client)  # the second granted request
    with pytest.raises(openai.RateLimitError):
        ask(client)
    status = json.loads(gw.cli("quota", "status", "--project", "campaign-2024", "--format", "json").stdout)
    assert status[0]["limit"] == 1 and status[0]["granted"] == 2 and status[0]["used"] == 3
    decided = json.loads(gw.cli("quota", "requests", "--all", "--format", "json").stdout)
    assert decided[0]["status"] == "approved" and decided[0]["granted"] == 2 and decided[0]["decided_by"]
    # A denial needs a reason and is recorded.
    rid2 = gw.cli("quota", "request", "--project", "campaign-2024", "--requests", "9", "--reason", "more").stdout
    rid2 = rid2.split(":")[0]
    assert gw.cli("quota", "deny", rid2, check=False).returncode != 0
    gw.cli("quota", "deny", rid2, "--reason", "budget frozen")
    assert gw.cli("quota", "approve", rid2, check=False).returncode != 0


def test_cancelled_stream_releases_what_it_did_not_use(gw_factory):
    # Room for one reservation at a time: a leaked reservation would refuse the next request.
    gw = gw_factory({"governance": {"quotas": [{"user": "gus", "tokens": 1200, "period": "day"}]}})
    key = gw.create_key(user="gus")
    body = {"model": EMBEDDED, "messages": SAY, "max_tokens": 600, "stream": True, **STEADY}
    rid = gw.stream_and_leave(key, body, events=3)
    rec = gw.record(rid)
    assert rec["status"] == "cancelled" and rec["total_tokens"] < 600
    wait_for(lambda: quota_status(gw, "user", "gus")[0]["reserved"] == 0, 10, "the cancelled stream's release")
    assert ask(gw.client(key), max_tokens=600).usage.completion_tokens == 600


def test_request_without_max_tokens_is_held_to_the_default(gw_factory):
    gw = gw_factory(
        {
            "governance": {
                "default_max_tokens": 5,
                "quotas": [{"user": "hal", "tokens": 100000, "period": "day"}],
            }
        }
    )
    client = gw.client(gw.create_key(user="hal"))
    r = client.chat.completions.create(model=EMBEDDED, messages=SAY, **STEADY)
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"


def test_cli_refuses_bad_quota_input_with_one_line(gw_factory):
    gw = gw_factory()
    for args in (
        ["quota", "set", "--tokens", "5"],
        ["quota", "set", "--user", "a", "--project", "b", "--tokens", "5"],
        ["quota", "set", "--user", "a"],
        ["quota", "set", "--user", "a", "--tokens", "5", "--requests", "3"],
        ["quota", "set", "--user", "a", "--tokens", "5", "--period", "fortnight"],
        ["quota", "set", "--user", "a", "--tokens", "-5"],
        ["quota", "delete", "q_nope"],
        ["quota", "approve", "qr_nope"],
        ["quota", "request", "--user", "a", "--tokens", "5"],
    ):
        r = gw.cli(*args, check=False)
        assert r.returncode != 0, args
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_admin_api_sets_and_reports_quotas(gw_factory):
    gw = gw_factory()
    key = gw.create_key(user="ivy", project="p-ivy")
    admin = {"Authorization": f"Bearer {gw.admin_key}"}
    base = f"http://127.0.0.1:{gw.port}/admin"
    limit = {"scope": "user", "name": "ivy", "requests": 1, "period": "day"}
    r = httpx.post(f"{base}/quotas", json=limit, headers=admin)
    assert r.status_code == 201, r.text
    ask(gw.client(key))  # the admin API applies the change at once in this gateway
    with pytest.raises(openai.RateLimitError):
        ask(gw.client(key))
    st = httpx.get(f"{base}/quotas/status", params={"scope": "user", "name": "ivy"}, headers=admin).json()
    assert st[0]["used"] == 1 and st[0]["remaining"] == 0 and st[0]["resets_at"]
    bad = httpx.post(f"{base}/quotas", json={"scope": "user", "tokens": 5}, headers=admin)
    assert bad.status_code == 400 and "error" in bad.json()


def test_periods_cut_at_local_midnight():
    sh = ZoneInfo("Asia/Shanghai")
    # 2026-11-30 17:30 UTC is 01:30 on 1 December in Beijing: a new day, week (Tuesday's) and month.
    at = 1796059800000
    start, end = bounds("day", at, sh)
    assert start == 1796054400000 and end - start == 86_400_000  # 2026-11-30T16:00Z
    mstart, mend = bounds("month", at, sh)
    assert mstart == start and mend == 1798732800000  # 2026-12-31T16:00Z
    wstart, _ = bounds("week", at, sh)
    assert wstart == start - 86_400_000  # Monday 30 November, Beijing
    ustart, _ = bounds("day", at, ZoneInfo("UTC"))
    assert ustart == 1795996800000
    assert bounds("minute", at + 1234, sh) == (at, at + 60_000)


def test_ledger_sum_matches_counter_after_mixed_outcomes(gw_factory):
    gw = gw_factory({"governance": {"quotas": [{"global": True, "tokens": 10**9, "period": "total"}]}})
    key = gw.create_key(user="kim")
    ask(gw.client(key))
    body = {"model": EMBEDDED, "messages": SAY, "max_tokens": 50, "stream": True, **STEADY}
    gw.stream_and_leave(key, body, events=2)
    with pytest.raises(openai.BadRequestError):
        gw.client(key).chat.completions.create(model=EMBEDDED, messages=[], max_tokens=2)
    rows = settled(gw, 3)
    time.sleep(0.5)
    status = json.loads(gw.cli("quota", "status", "--global", "--format", "json").stdout)
    store = gw.store()
    with store.engine.connect() as c:
        total = c.execute(select(func.coalesce(func.sum(t.c.total_tokens), 0))).scalar_one()
    store.close()
    assert status[0]["used"] == total == tokens_used(rows)


def test_cost_quota_in_money_never_overshoots(gw_factory):
    """A department's budget in CNY: requests are charged at the price book and admission reserves
    the most a request can cost, so the ledger's cost never passes the budget."""
    budget = "1"  # ¥1 at ¥0.8/¥2.4 per 1k tokens: about 20 short requests
    gw = gw_factory(
        {
            "prices": [{"model": EMBEDDED, "input": "0.8", "output": "2.4", "per": "1k", "currency": "CNY"}],
            "governance": {
                "quotas": [{"department": "marketing", "cost": budget, "currency": "CNY", "period": "month"}]
            },
        }
    )
    client = gw.client(gw.create_key(user="mkt", project="campaign-2024", department="marketing"))
    refused, attempts = None, 0
    while refused is None and attempts < 40:
        attempts += 1
        try:
            ask(client, max_tokens=8)
        except openai.RateLimitError as e:
            refused = e
    assert refused is not None, "the budget never refused"
    settled(gw, attempts)
    err = refused.response.json()["error"]
    assert err["type"] == "insufficient_quota" and "¥1.000000" in err["message"]
    assert refused.response.headers["x-ratelimit-limit-cost"] == "1000000"
    rows = [r for r in ledger(gw) if r["status"] == "ok"]
    assert rows and all(r["currency"] == "CNY" and r["cost_micros"] > 0 for r in rows)
    spent = sum(r["cost_micros"] for r in rows)
    assert spent <= 1_000_000
    status = json.loads(gw.cli("quota", "status", "--department", "marketing", "--format", "json").stdout)
    assert status[0]["metric"] == "cost:CNY" and status[0]["used"] == spent and status[0]["limit"] == 1_000_000
    table = gw.cli("quota", "status", "--department", "marketing").stdout
    assert "¥1.000000" in table
    # The CLI takes money for limits, exactly.
    out = gw.cli("quota", "set", "--project", "p", "--cost", "5000", "--currency", "CNY", "--period", "month")
    assert "¥5000.000000" in out.stdout
    bad = gw.cli("quota", "set", "--project", "p", "--cost", "0.0000001", "--period", "month", check=False)
    assert bad.returncode == 2 and "finer than one micro-unit" in bad.stderr
